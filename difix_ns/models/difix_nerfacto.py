"""difix-nerfacto: nerfacto that builds, trains and evaluates offline.

Nerfacto itself runs on CPU (`--pipeline.model.implementation torch` where tiny-cuda-nn is absent); what stops it
on a machine without network is LPIPS downloading AlexNet in `populate_modules`, handled by `difix_ns.metrics`.
The progressive pseudo-view update (Difix3D) joins through this model and `DifixVanillaDataManager`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig

from difix_ns.metrics import offline_lpips
from difix_ns.models.metrics_mixin import OfflineMetricsMixin

__all__ = ["DifixNerfactoModel", "DifixNerfactoModelConfig"]


@dataclass
class DifixNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto's settings, unchanged in name and meaning; difix-specific settings are added here."""

    _target: Type = field(default_factory=lambda: DifixNerfactoModel)


class DifixNerfactoModel(OfflineMetricsMixin, NerfactoModel):
    """Nerfacto with offline-safe metrics (see module docstring)."""

    config: DifixNerfactoModelConfig

    def populate_modules(self) -> None:
        with offline_lpips():
            super().populate_modules()
