"""`ns-train difix-nerfacto`: nerfacto with Difix3D progressive fixer updates and post-processing, offline.

The Difix3D+ settings live in `--pipeline.progressive.*` (schedule, targets), `--pipeline.model.fixer.*`,
`--pipeline.model.postprocess` and `--pipeline.datamanager.pseudo-fraction`.
"""

from __future__ import annotations

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from difix_ns.data.datamanagers import DifixVanillaDataManagerConfig
from difix_ns.method_configs._common import default_machine
from difix_ns.models.difix_nerfacto import DifixNerfactoModelConfig
from difix_ns.pipeline import DifixPipelineConfig
from difix_ns.trainer import DifixTrainerConfig

__all__ = ["difix_nerfacto"]

difix_nerfacto = MethodSpecification(
    config=DifixTrainerConfig(
        method_name="difix-nerfacto",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        machine=default_machine(),
        pipeline=DifixPipelineConfig(
            # VanillaDataManager, not nerfacto's ParallelDataManager: views added during training must be visible.
            datamanager=DifixVanillaDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(),
                train_num_rays_per_batch=4096,
                eval_num_rays_per_batch=4096,
            ),
            model=DifixNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers={
            "proposal_networks": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description=(
        "Difix3D+ on nerfacto: progressive pseudo-view updates and fixer post-processing (rgb_fixed); "
        "builds, trains and evaluates offline."
    ),
)
