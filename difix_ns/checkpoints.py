"""Let torch >= 2.6 (`torch.load(weights_only=True)` by default) read nerfstudio's checkpoints.

nerfstudio's exponential-decay scheduler computes learning rates with numpy, so its checkpoints hold
`numpy.float64` scalars (optimizer `lr`, scheduler `_last_lr`). With weights-only loading, `ns-eval`, `ns-render`,
`ns-viewer` and `ns-train --load-dir` then fail with "Unsupported global: numpy.core.multiarray.scalar".
We allow exactly what rebuilds numpy scalars of plain numeric dtypes: the scalar constructor, `numpy.dtype` and
the numeric dtype classes. Arbitrary pickled objects stay refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

__all__ = ["allow_nerfstudio_checkpoints", "latest_complete_step", "NERFSTUDIO_CHECKPOINT_GLOBALS"]


try:
    from numpy._core.multiarray import scalar as _numpy_scalar  # numpy >= 2
except ImportError:
    from numpy.core.multiarray import scalar as _numpy_scalar  # numpy 1.x

_NUMERIC_DTYPES = (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)

NERFSTUDIO_CHECKPOINT_GLOBALS = [
    # A checkpoint names the scalar constructor by the module path of the numpy that wrote it (1.x or 2.x).
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(t)) for t in _NUMERIC_DTYPES),
]
"""Globals that nerfstudio checkpoints need beyond torch's weights-only defaults."""


def allow_nerfstudio_checkpoints() -> None:
    """Register `NERFSTUDIO_CHECKPOINT_GLOBALS` with torch's weights-only unpickler (idempotent)."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals(NERFSTUDIO_CHECKPOINT_GLOBALS)


def _is_complete(path: Path) -> bool:
    """Whether a torch checkpoint (a zip archive) was written to the end: a cut file has no central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def latest_complete_step(folder: Path) -> Tuple[Optional[int], List[Path]]:
    """The step of the newest complete `step-N.ckpt` in `folder` (nerfstudio writes checkpoints in place, so a run
    killed while saving leaves a cut last file), and the cut files skipped."""
    found = sorted(Path(folder).glob("step-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]), reverse=True)
    skipped = []
    for path in found:
        if _is_complete(path):
            return int(path.stem.split("-")[1]), skipped
        skipped.append(path)
    return None, skipped
