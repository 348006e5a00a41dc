"""Image fixers: one interface (`Fixer.fix(images, refs) -> images`), back-ends difix, nafnet, identity.

Names are resolved lazily so `import difix_ns.fixers` stays cheap (diffusers is imported only by the back-ends).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DifixFixer", "Fixer", "FixerConfig", "IdentityFixer", "NAFNet", "NAFNetFixer"]

_WHERE = {
    "DifixFixer": "difix_ns.fixers.difix",
    "Fixer": "difix_ns.fixers.base",
    "FixerConfig": "difix_ns.fixers.config",
    "IdentityFixer": "difix_ns.fixers.base",
    "NAFNet": "difix_ns.fixers.nafnet",
    "NAFNetFixer": "difix_ns.fixers.nafnet",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'difix_ns.fixers' has no attribute {name!r}")
