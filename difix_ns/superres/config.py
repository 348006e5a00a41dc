"""Settings of the 3DSR stages (`--pipeline.superres.*` of `ns-train sr3d-splatfacto`) and their schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

__all__ = [
    "BACKENDS",
    "DifixSuperResConfig",
    "MIN_LR_SIZE",
    "SdX4SuperResConfig",
    "SelfSuperResConfig",
    "SuperResConfig",
    "check_lr_size",
]

BACKENDS = ("self", "bicubic", "difix", "sd-x4")
"""The SR back-ends `SuperResConfig.backend` may name."""

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
    scale_step: int = 2
    """The network learns one x`scale_step` step (LR views downscaled by it and bicubic-upsampled back, against the
    LR views) and upscales in stages of at most that step until the factor is reached (ZSSR's gradual SR): a x4
    step learnt on views 4x smaller than the LR ones over-sharpens one scale up. >= factor: one stage."""
    strength: Optional[float] = None
    """Residual strength s of each stage, x + s (network(x) - x), in [0, 1]; None: chosen after training among
    0, 0.25, ..., 1 on the LR views themselves (downscaled by the factor, upscaled in stages, against the LR views)."""
    render_weight: float = 0.0
    """With a render (`condition_on_render`): the target is w x (the render's path: the render at the last stage's
    input size, then that stage) + (1 - w) x (the LR view's path: all stages), before the colour fix. 0 (default):
    per-frame SR, the render unused; 1: the render's path alone (3DSR's alternation). Measured with
    `benchmarks/superres.py` (`benchmarks/results/superres_*render*`): w = 1 gains on synth0 (19.98 dB against 19.49
    at 0) but loses on both real captures (fruit 22.56 against 23.63, beer 24.40 against 24.62), w = 0.5 as much
    (fruit 22.57, beer 24.48), though at 0.5 the targets score near per-frame ones on the training views
    (`superres_targets_*`): fed the 3DGS's own renders, the targets likely keep its errors on unseen views."""

    def validate(self) -> None:
        if self.strength is not None and not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"superres.self_sr.strength must be in [0, 1] or None, got {self.strength!r}")
        if not 0.0 <= self.render_weight <= 1.0:
            raise ValueError(f"superres.self_sr.render_weight must be in [0, 1], got {self.render_weight!r}")
        if isinstance(self.scale_step, bool) or not isinstance(self.scale_step, int) or self.scale_step < 2:
            raise ValueError(f"superres.self_sr.scale_step must be an integer >= 2, got {self.scale_step!r}")
        for name in ("steps", "width", "batch_size", "crop_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"superres.self_sr.{name} must be a positive integer, got {value!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"superres.self_sr.max_seconds must be > 0 or None, got {self.max_seconds!r}")


def _check_device(value: str, setting: str) -> None:
    if not isinstance(value, str) or not (value in ("auto", "cpu") or value.startswith("cuda")):
        raise ValueError(f"{setting} must be auto, cpu, cuda or cuda:N, got {value!r}")


@dataclass
class DifixSuperResConfig:
    """The `difix` back-end: the project's single-step Difix fixer refining the HR render (or the bicubic-upsampled
    LR view before there is one), with the bicubic-upsampled LR view as its reference image."""

    checkpoint: str = "nvidia/difix_ref"
    """Difix checkpoint: hub id (nvidia/difix, nvidia/difix_ref; HF_HUB_OFFLINE is honoured) or local folder."""
    cache_dir: Optional[Path] = None
    """Hugging Face cache folder for a hub id (default: the standard cache)."""
    reference: bool = True
    """Give the bicubic-upsampled LR view as the reference image (used by reference checkpoints, e.g. difix_ref)."""
    device: str = "auto"
    """Device of the fixer: auto (cuda if available, else cpu), cpu, cuda, cuda:N."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision on CUDA (auto = bf16, or fp16 without bf16 support); CPU always runs fp32."""
    timestep: Optional[int] = None
    """The single diffusion timestep (None = the checkpoint's, else 199)."""

    def validate(self) -> None:
        if not isinstance(self.checkpoint, str) or not self.checkpoint.strip():
            raise ValueError(
                "superres.difix.checkpoint must be a hub id (e.g. nvidia/difix_ref) or a folder, "
                f"got {self.checkpoint!r}"
            )
        _check_device(self.device, "superres.difix.device")
        if self.timestep is not None and (isinstance(self.timestep, bool) or not 0 <= self.timestep < 1000):
            raise ValueError(f"superres.difix.timestep must be in [0, 1000) or None, got {self.timestep!r}")


@dataclass
class SdX4SuperResConfig:
    """The `sd-x4` back-end: a diffusers StableDiffusionUpscalePipeline checkpoint with the 3DSR latent alternation
    (one latent per training view across rounds; the encoded render takes the predicted x0's place)."""

    checkpoint: str = "stabilityai/stable-diffusion-x4-upscaler"
    """Hub id (offline: taken from the local Hugging Face cache only) or local folder in that layout."""
    cache_dir: Optional[Path] = None
    """Hugging Face cache folder for a hub id (default: the standard cache)."""
    prompt: str = ""
    """Text prompt of the upscaler (3DSR: empty); encoded once at load time."""
    noise_level: int = 20
    """Noise level added to the low-resolution condition (the upscaler pipeline's default; at most its
    max_noise_level, 350)."""
    seed: int = 0
    """Seed of the initial latents and of each round's posterior noise (per view and round: resumable)."""
    device: str = "auto"
    """Device of the upscaler: auto (cuda if available, else cpu), cpu, cuda, cuda:N."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Precision of the UNet (auto = fp16 on CUDA, fp32 on CPU); the VAE, text encoder and latents stay fp32."""

    def validate(self) -> None:
        if not isinstance(self.checkpoint, str) or not self.checkpoint.strip():
            raise ValueError(
                "superres.sd_x4.checkpoint must be a hub id (e.g. stabilityai/stable-diffusion-x4-upscaler) or a "
                f"folder, got {self.checkpoint!r}"
            )
        if isinstance(self.noise_level, bool) or not isinstance(self.noise_level, int) or self.noise_level < 0:
            raise ValueError(f"superres.sd_x4.noise_level must be an integer >= 0, got {self.noise_level!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"superres.sd_x4.seed must be an integer, got {self.seed!r}")
        _check_device(self.device, "superres.sd_x4.device")


@dataclass
class SuperResConfig:
    """3D-consistent super-resolution (3DSR): an LR stage, then `rounds` rounds of SR targets + 3DGS training."""

    factor: int = 4
    """Super-resolution factor: the LR training views are the HR dataset downscaled by it (antialiased)."""
    rounds: int = 4
    """Number of SR rounds K after the LR stage (each: new SR targets, then `iterations_per_round` steps at HR)."""
    iterations_per_round: int = 2000
    """3DGS training steps at HR per round, warm-started from the previous round's Gaussians. Measured on the
    super-resolution benchmark's synth0 (`benchmarks/results/superres_*schedule*`, `self` back-end at render weight
    1): 3000 + 4 x 2000 steps reach 19.98 dB (20.06 in another run of the same recipe), 3DSR's 3000 + 4 x 5000 steps
    19.93 dB, 3000 + 4 x 1000 steps 19.88 dB."""
    lr_iterations: int = 3000
    """Steps of the LR stage (splatfacto on the LR views at LR cameras) before the first round."""
    lambda_lr: float = 1.0
    """Weight of the LR term: the loss between the antialiased x1/factor downsample of the render and the LR view."""
    ssim_weight: float = 0.2
    """w in (1-w) L1 + w D-SSIM, for both the SR term and the LR term."""
    backend: Literal["self", "bicubic", "difix", "sd-x4"] = "self"
    """SR back-end: self (NAFNet trained on the scene's own LR views, ZSSR-style), bicubic (reference baseline),
    difix (the Difix fixer refining the render) or sd-x4 (Stable Diffusion x4 upscaler with 3DSR latents)."""
    condition_on_render: bool = True
    """Give the back-end the current HR render of each view (3DSR); off: per-frame SR of the LR views only. The
    `self` back-end weighs the render by `self_sr.render_weight` (default 0: per-frame either way)."""
    color_fix: bool = True
    """Replace the low frequencies of each SR target by those of the bicubic-upsampled LR view (colour fix)."""
    densify_fraction: float = 0.5
    """Splatfacto's densification (split, clone, prune, opacity reset) runs in this first fraction of each SR round
    only, as in 3DSR (0.5); the LR stage densifies throughout. 1.0: whole rounds."""
    self_sr: SelfSuperResConfig = field(default_factory=SelfSuperResConfig)
    """Settings of the `self` back-end."""
    difix: DifixSuperResConfig = field(default_factory=DifixSuperResConfig)
    """Settings of the `difix` back-end."""
    sd_x4: SdX4SuperResConfig = field(default_factory=SdX4SuperResConfig)
    """Settings of the `sd-x4` back-end."""

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

    def densify_at(self, step: int) -> bool:
        """Whether densification runs at training step `step`: throughout the LR stage, in the first
        `densify_fraction` of each SR round, never past the schedule."""
        if step < self.lr_iterations:
            return True
        if step >= self.total_iterations:
            return False
        in_round = (step - self.lr_iterations) % self.iterations_per_round
        return in_round < self.densify_fraction * self.iterations_per_round

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
        if not 0.0 <= self.densify_fraction <= 1.0:
            raise ValueError(f"superres.densify_fraction must be in [0, 1], got {self.densify_fraction!r}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ValueError(f"superres.ssim_weight must be in [0, 1], got {self.ssim_weight!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"superres.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        self.self_sr.validate()
        if self.backend in ("difix", "sd-x4"):  # only the chosen one: the others' settings are unused
            (self.difix if self.backend == "difix" else self.sd_x4).validate()


def check_lr_size(height: int, width: int, factor: int, what: str = "training view") -> None:
    """Raise ValueError when a `height` x `width` view downscaled by `factor` is below `MIN_LR_SIZE`."""
    lr_h, lr_w = height // factor, width // factor
    if min(lr_h, lr_w) < MIN_LR_SIZE:
        raise ValueError(
            f"superres.factor={factor} makes the {what} of {width}x{height} px {lr_w}x{lr_h} px at low resolution; "
            f"sr3d-splatfacto needs at least {MIN_LR_SIZE} px per side (use a smaller factor or larger images)"
        )
