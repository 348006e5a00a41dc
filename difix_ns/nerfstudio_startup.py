"""A faster start for every nerfstudio command (`ns-train`, `ns-eval`, `difix-ns compress`, ...) while this plugin
is installed.

Importing `nerfstudio.configs.method_configs` builds one placeholder config per external method that is not
installed (`external_methods.get_external_methods`, 26 of them in nerfstudio 1.1.5), and each placeholder's
`__post_init__` asks `inspect.stack()[2].function` who created it, to stay quiet when that is
`get_external_methods`. `inspect.stack()` reads the source lines of every frame on the (deep, import-time) stack:
about 3 s of each start on these machines (`benchmarks/nerfstudio_startup.py`). nerfstudio imports the plugins'
method entry points (`discover_methods`) just before that call, so `difix_ns.method_configs` swaps in the same test
on the one frame it needs. `DIFIX_NS_FAST_EXTERNAL_METHODS=0` leaves nerfstudio untouched.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ENV_SWITCH", "speed_up_external_methods"]

ENV_SWITCH = "DIFIX_NS_FAST_EXTERNAL_METHODS"
"""Set to 0 to keep nerfstudio's own `inspect.stack()` check."""


def speed_up_external_methods() -> bool:
    """Replace `ExternalMethodDummyTrainerConfig.__post_init__`'s caller test by a one-frame one (idempotent).
    Returns whether the fast test is in place; False when switched off or when nerfstudio has no such class."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return False
    try:
        from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
    except ImportError:
        return False
    original = getattr(ExternalMethodDummyTrainerConfig, "__post_init__", None)
    if original is None:
        return False
    if getattr(original, "_difix_ns_fast", False):
        return True

    def __post_init__(self) -> None:
        # frame 0: this function, 1: the dataclass __init__, 2: its caller, as inspect.stack()[2] in nerfstudio's
        if sys._getframe(2).f_code.co_name == "get_external_methods":
            return
        original(self)  # made elsewhere (the user picked an uninstalled method): nerfstudio's own prompt

    __post_init__._difix_ns_fast = True  # type: ignore[attr-defined]
    ExternalMethodDummyTrainerConfig.__post_init__ = __post_init__
    return True
