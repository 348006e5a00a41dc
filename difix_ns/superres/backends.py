"""The SR back-end named by the settings: one module per back-end, chosen here (imported lazily)."""

from __future__ import annotations

from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.config import BACKENDS

__all__ = ["make_backend"]


def make_backend(config) -> SuperResBackend:
    """The back-end named by `SuperResConfig.backend` (imported lazily; no weights are loaded before `prepare`)."""
    if config.backend == "bicubic":
        from difix_ns.superres.bicubic import BicubicBackend

        return BicubicBackend()
    if config.backend == "self":
        from difix_ns.superres.self_sr import SelfBackend

        return SelfBackend(config.self_sr)
    if config.backend == "difix":
        from difix_ns.superres.difix_sr import DifixBackend

        return DifixBackend(config.difix)
    if config.backend == "sd-x4":
        from difix_ns.superres.sd_x4 import SdX4Backend

        return SdX4Backend(config.sd_x4, rounds=config.rounds)
    raise ValueError(f"superres.backend must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
