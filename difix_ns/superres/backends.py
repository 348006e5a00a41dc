"""The SR back-end named by the settings: one module per back-end, chosen here (imported lazily)."""

from __future__ import annotations

from difix_ns.superres.base import SuperResBackend

__all__ = ["make_backend"]


def make_backend(config) -> SuperResBackend:
    """The back-end named by `SuperResConfig.backend` (imported lazily)."""
    if config.backend == "bicubic":
        from difix_ns.superres.bicubic import BicubicBackend

        return BicubicBackend()
    if config.backend == "self":
        from difix_ns.superres.self_sr import SelfBackend

        return SelfBackend(config.self_sr)
    raise ValueError(f"superres.backend must be 'self' or 'bicubic', got {config.backend!r}")
