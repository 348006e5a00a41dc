"""Settings of the 3DSR stages (`--pipeline.superres.*` of `ns-train sr3d-splatfacto`) and their schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

__all__ = ["MIN_LR_SIZE", "SelfSuperResConfig", "SuperResConfig", "check_lr_size"]

MIN_LR_SIZE = 16
"""Smallest low-resolution side (pixels) the method trains on: the D-SSIM term uses an 11x11 window, and the
`self` back-end trains on the LR views downscaled once more by the factor."""


@dataclass
class SelfSuperResConfig:
    """The `self` back-end: a small NAFNet trained on this scene's own LR views (ZSSR-style internal learning)."""

    steps: int = 1000
    """NAFNet optimizer steps (upper bound; `max_seconds` may stop earlier)."""
    max_seconds: Optional[float] = 120.0
    """Time budget of the NAFNet training in seconds (None = no limit)."""
    width: int = 16
    """NAFNet channels at full resolution."""
    batch_size: int = 4
    """Crops per step."""
    crop_size: int = 48
    """Random square crops of this size (padded where an LR view is smaller)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    seed: int = 0
    """Seed of the crops and the initial weights."""

    def validate(self) -> None:
        for name in ("steps", "width", "batch_size", "crop_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"superres.self_sr.{name} must be a positive integer, got {value!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"superres.self_sr.max_seconds must be > 0 or None, got {self.max_seconds!r}")


@dataclass
class SuperResConfig:
    """3D-consistent super-resolution (3DSR): an LR stage, then `rounds` rounds of SR targets + 3DGS training."""

    factor: int = 4
    """Super-resolution factor: the LR training views are the HR dataset downscaled by it (antialiased)."""
    rounds: int = 4
    """Number of SR rounds K after the LR stage (each: new SR targets, then `iterations_per_round` steps at HR)."""
    iterations_per_round: int = 1000
    """3DGS training steps at HR per round, warm-started from the previous round's Gaussians."""
    lr_iterations: int = 3000
    """Steps of the LR stage (splatfacto on the LR views at LR cameras) before the first round."""
    lambda_lr: float = 1.0
    """Weight of the LR term: the loss between the antialiased x1/factor downsample of the render and the LR view."""
    ssim_weight: float = 0.2
    """w in (1-w) L1 + w D-SSIM, for both the SR term and the LR term."""
    backend: Literal["self", "bicubic"] = "self"
    """SR back-end: self (NAFNet trained on the scene's own LR views, ZSSR-style) or bicubic (reference baseline)."""
    condition_on_render: bool = True
    """Give the back-end the current HR render of each view (3DSR); off: per-frame SR of the LR views only."""
    color_fix: bool = True
    """Replace the low frequencies of each SR target by those of the bicubic-upsampled LR view (colour fix)."""
    self_sr: SelfSuperResConfig = field(default_factory=SelfSuperResConfig)
    """Settings of the `self` back-end."""

    @property
    def total_iterations(self) -> int:
        """Steps of the whole schedule: LR stage + all rounds."""
        return self.lr_iterations + self.rounds * self.iterations_per_round

    def round_at(self, step: int) -> int:
        """The stage training step `step` belongs to: 0 = LR stage, 1..rounds = SR rounds (the last one continues
        past the schedule)."""
        if step < self.lr_iterations:
            return 0
        return min(self.rounds, 1 + (step - self.lr_iterations) // self.iterations_per_round)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"superres.factor must be a positive integer, got {self.factor!r}")
        for name in ("rounds", "iterations_per_round", "lr_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"superres.{name} must be a positive integer, got {value!r}")
        if not self.lambda_lr >= 0:
            raise ValueError(f"superres.lambda_lr must be >= 0, got {self.lambda_lr!r}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ValueError(f"superres.ssim_weight must be in [0, 1], got {self.ssim_weight!r}")
        if self.backend not in ("self", "bicubic"):
            raise ValueError(f"superres.backend must be 'self' or 'bicubic', got {self.backend!r}")
        self.self_sr.validate()


def check_lr_size(height: int, width: int, factor: int, what: str = "training view") -> None:
    """Raise ValueError when a `height` x `width` view downscaled by `factor` is below `MIN_LR_SIZE`."""
    lr_h, lr_w = height // factor, width // factor
    if min(lr_h, lr_w) < MIN_LR_SIZE:
        raise ValueError(
            f"superres.factor={factor} makes the {what} of {width}x{height} px {lr_w}x{lr_h} px at low resolution; "
            f"sr3d-splatfacto needs at least {MIN_LR_SIZE} px per side (use a smaller factor or larger images)"
        )
