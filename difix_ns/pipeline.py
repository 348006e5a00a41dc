"""Pipeline of the difix methods: nerfstudio's VanillaPipeline, the place where the fixer loop joins training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

__all__ = ["DifixPipeline", "DifixPipelineConfig"]


@dataclass
class DifixPipelineConfig(VanillaPipelineConfig):
    """Pipeline of difix-splatfacto and difix-nerfacto."""

    _target: Type = field(default_factory=lambda: DifixPipeline)


class DifixPipeline(VanillaPipeline):
    """Datamanager + model, as in nerfstudio; the progressive fixer update (Difix3D) is added here."""

    config: DifixPipelineConfig
