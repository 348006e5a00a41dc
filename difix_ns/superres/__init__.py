"""3D-consistent super-resolution (3DSR, ICCV 2025) for `ns-train sr3d-splatfacto`: settings, SR back-ends
(`bicubic`, `self`, `difix`, `sd-x4`), the data manager, model and pipeline of the method. Heavy parts are imported
by their modules, not here."""

from difix_ns.superres.config import (
    MIN_LR_SIZE,
    DifixSuperResConfig,
    SdX4SuperResConfig,
    SelfSuperResConfig,
    SuperResConfig,
    check_lr_size,
)

__all__ = [
    "MIN_LR_SIZE",
    "DifixSuperResConfig",
    "SdX4SuperResConfig",
    "SelfSuperResConfig",
    "SuperResConfig",
    "check_lr_size",
]
