"""Model of sr3d-splatfacto: difix-splatfacto (splatfacto on any device, offline) with the 3DSR loss.

The main loss is (1 - w) L1 + w D-SSIM to the batch image (the LR view in the LR stage, the SR target in a
round), w = `superres.ssim_weight`; in a round a batch also carries the LR view (`sr3d_lr_image`) and the loss
gains `lr_loss` = lambda_lr x the same loss between the antialiased downsample of the render to the LR size and
the LR view (`difix_ns.superres.ops.sr3d_loss`). Difix post-processing is off by default (`postprocess`), so
evaluation scores the 3D scene's own renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Literal, Optional, Type

from torch import Tensor

from difix_ns.models.difix_splatfacto import DifixSplatfactoModel, DifixSplatfactoModelConfig
from difix_ns.superres.ops import sr3d_loss
from difix_ns.training.losses import photometric_loss

__all__ = ["Sr3dSplatfactoModel", "Sr3dSplatfactoModelConfig"]


@dataclass
class Sr3dSplatfactoModelConfig(DifixSplatfactoModelConfig):
    """difix-splatfacto's settings; the 3DSR loss weights are in `--pipeline.superres`."""

    _target: Type = field(default_factory=lambda: Sr3dSplatfactoModel)
    num_downscales: int = 0
    """Splatfacto's coarse-to-fine downscales: off (the stages set the resolution)."""
    rasterize_mode: Literal["classic", "antialiased"] = "classic"
    """gsplat's rasterization. Antialiased (Mip-Splatting's 2D filter, 3DSR's representation) measured on the
    super-resolution benchmark, sr3d classic -> antialiased: synth0 19.42 -> 19.77 dB, fruit 21.27 -> 20.39, beer
    23.95 -> 23.76. It helps the synthetic scene only, so classic stays the default."""
    postprocess: bool = False
    """Difix3D+ post-processing of renders with `--pipeline.model.fixer` (off: the 3DSR scene is the result)."""


class Sr3dSplatfactoModel(DifixSplatfactoModel):
    """Splatfacto with the 3DSR loss (see module docstring)."""

    config: Sr3dSplatfactoModelConfig
    ssim_weight: float = 0.2
    lambda_lr: float = 1.0
    last_lr_term: Optional[Dict[str, object]] = None
    """Sizes that entered the last LR term (render and LR view), for inspection."""

    densify_at: Optional[Callable[[int], bool]] = None
    """Steps at which splatfacto's densification runs (the pipeline's `SuperResConfig.densify_at`); None: always."""

    def step_post_backward(self, step):
        # 3DSR stops densifying half-way through each round: the late steps of a round refine the Gaussians that
        # the round's SR targets asked for, without growing new ones on their last hallucinations.
        if self.densify_at is None or self.densify_at(step):
            super().step_post_backward(step)

    def set_loss_weights(self, ssim_weight: float, lambda_lr: float) -> None:
        """The pipeline's `superres.ssim_weight` and `superres.lambda_lr`."""
        self.ssim_weight, self.lambda_lr = float(ssim_weight), float(lambda_lr)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        target = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        render = outputs["rgb"]
        if "sr3d_lr_image" not in batch:
            loss_dict["main_loss"] = photometric_loss(render, target, self.ssim_weight, self.ssim)
            return loss_dict
        lr_image = batch["sr3d_lr_image"].to(render.device)
        losses, meta = sr3d_loss(render, target, lr_image, self.ssim_weight, self.lambda_lr, self.ssim)
        loss_dict["main_loss"] = losses["sr_loss"]
        loss_dict["lr_loss"] = losses["lr_loss"]
        self.last_lr_term = {"render_size": tuple(render.shape[:2]), "lr_size": tuple(meta["lr_render"].shape[:2])}
        return loss_dict
