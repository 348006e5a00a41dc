"""difix-nerfacto: nerfacto that builds, trains and evaluates offline.

Nerfacto itself runs on CPU (`--pipeline.model.implementation torch` where tiny-cuda-nn is absent); what stops it
on a machine without network is LPIPS downloading AlexNet in `populate_modules`, handled by `difix_ns.metrics`.
Difix3D/Difix3D+ (`difix_ns.models.fixing`): the fixer, post-processing and the viewer toggle; rays of pseudo
views (from `DifixVanillaDataManager`, marked by `difix_pseudo` [N] with their alpha mask `difix_mask` [N, 1])
weigh `pseudo_loss_weight` * mask in the RGB loss. They carry the nearest training view's camera index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Type

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor

from difix_ns.fixers.config import FixerConfig
from difix_ns.metrics import offline_lpips
from difix_ns.models.fixing import DifixFixingMixin
from difix_ns.models.metrics_mixin import OfflineMetricsMixin

__all__ = ["DifixNerfactoModel", "DifixNerfactoModelConfig"]


@dataclass
class DifixNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto's settings, unchanged in name and meaning; difix-specific settings are added here."""

    _target: Type = field(default_factory=lambda: DifixNerfactoModel)
    fixer: FixerConfig = field(default_factory=lambda: FixerConfig(backend="identity"))
    """Image fixer of the progressive update and of post-processing (built at first use). Default: identity, the
    best fixer available offline until a trained one is configured (e.g. --pipeline.model.fixer.backend nafnet
    --pipeline.model.fixer.checkpoint DIR, or difix with nvidia/difix_ref)."""
    postprocess: bool = True
    """Difix3D+ post-processing: renders for evaluation, ns-render and the viewer also get `rgb_fixed` (the viewer
    checkbox switches it live)."""
    postprocess_reference: Literal["nearest", "none"] = "nearest"
    """Reference view of post-processing: the nearest training view (by pose distance), or none."""
    pseudo_loss_weight: float = 0.3
    """Weight of the loss on pseudo-view rays (the paper's 0.3)."""


class DifixNerfactoModel(DifixFixingMixin, OfflineMetricsMixin, NerfactoModel):
    """Nerfacto with offline-safe metrics and the Difix3D(+) additions (see module docstring)."""

    config: DifixNerfactoModelConfig

    def populate_modules(self) -> None:
        with offline_lpips():
            super().populate_modules()
        self._setup_fixing()

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Nerfacto's losses; with pseudo rays in the batch the RGB loss is a per-ray weighted mean
        (weight 1 for real rays, `pseudo_loss_weight` * alpha mask for pseudo rays)."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if "difix_pseudo" not in batch:
            return loss_dict
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=batch["image"].to(self.device)
        )
        pseudo = batch["difix_pseudo"].to(self.device).reshape(-1)
        mask = batch["difix_mask"].to(self.device).reshape(-1).float()
        weight = torch.where(pseudo, self._pseudo_weight() * mask, torch.ones_like(mask))
        loss_dict["rgb_loss"] = (weight * ((gt_rgb - pred_rgb) ** 2).mean(dim=-1)).mean()
        return loss_dict
