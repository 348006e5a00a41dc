"""difix-nerfacto: nerfacto that builds, trains and evaluates offline.

Nerfacto itself runs on CPU (`--pipeline.model.implementation torch` where tiny-cuda-nn is absent); what stops it
on a machine without network is LPIPS downloading AlexNet in `populate_modules`, handled by `difix_ns.metrics`.
Difix3D/Difix3D+ (`difix_ns.models.fixing`): the fixer, post-processing and the viewer toggle; rays of pseudo
views (from `DifixVanillaDataManager`, marked by `difix_pseudo` [N] with their alpha mask `difix_mask` [N, 1])
weigh `pseudo_loss_weight` * mask in the RGB loss. They carry the nearest training view's camera index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Type

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor

from difix_ns.metrics import offline_lpips
from difix_ns.models.fixing import DifixFixingConfig, DifixFixingMixin
from difix_ns.models.metrics_mixin import OfflineMetricsMixin

__all__ = ["DifixNerfactoModel", "DifixNerfactoModelConfig"]


@dataclass
class DifixNerfactoModelConfig(NerfactoModelConfig, DifixFixingConfig):
    """Nerfacto's settings, unchanged in name and meaning; difix-specific settings are added here."""

    _target: Type = field(default_factory=lambda: DifixNerfactoModel)


class DifixNerfactoModel(DifixFixingMixin, OfflineMetricsMixin, NerfactoModel):
    """Nerfacto with offline-safe metrics and the Difix3D(+) additions (see module docstring)."""

    config: DifixNerfactoModelConfig
    depth_is_ray_distance = True  # nerfacto's depth: distance along the unit-length ray

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
            pred_image=outputs["rgb"],
            pred_accumulation=outputs["accumulation"],
            gt_image=batch["image"].to(self.device),
        )
        pseudo = batch["difix_pseudo"].to(self.device).reshape(-1)
        mask = batch["difix_mask"].to(self.device).reshape(-1).float()
        weight = torch.where(pseudo, self._pseudo_weight() * mask, torch.ones_like(mask))
        loss_dict["rgb_loss"] = (weight * ((gt_rgb - pred_rgb) ** 2).mean(dim=-1)).mean()
        return loss_dict
