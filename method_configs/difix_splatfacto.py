"""`ns-train difix-splatfacto`: splatfacto with Difix3D progressive fixer updates and post-processing, on any device.

The Difix3D+ settings live in `--pipeline.progressive.*` (schedule, targets), `--pipeline.model.fixer.*`,
`--pipeline.model.postprocess` and `--pipeline.datamanager.pseudo-fraction`.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from difix_ns.data.datamanagers import DifixFullImageDatamanagerConfig
from difix_ns.method_configs._common import default_machine
from difix_ns.models.difix_splatfacto import DifixSplatfactoModelConfig
from difix_ns.pipeline import DifixPipelineConfig
from difix_ns.trainer import DifixTrainerConfig

__all__ = ["difix_splatfacto", "splatfacto_optimizers"]


def splatfacto_optimizers(max_steps: int = 30000) -> dict:
    """Splatfacto's optimizer and scheduler settings (nerfstudio 1.1.5 values), one group per parameter."""

    def adam(lr: float) -> AdamOptimizerConfig:
        return AdamOptimizerConfig(lr=lr, eps=1e-15)

    def warmup_decay(lr_final: float) -> ExponentialDecaySchedulerConfig:
        return ExponentialDecaySchedulerConfig(
            lr_final=lr_final, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
        )

    return {
        "means": {
            "optimizer": adam(1.6e-4),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
        },
        "features_dc": {"optimizer": adam(0.0025), "scheduler": None},
        "features_rest": {"optimizer": adam(0.0025 / 20), "scheduler": None},
        "opacities": {"optimizer": adam(0.05), "scheduler": None},
        "scales": {"optimizer": adam(0.005), "scheduler": None},
        "quats": {"optimizer": adam(0.001), "scheduler": None},
        "camera_opt": {"optimizer": adam(1e-4), "scheduler": warmup_decay(5e-7)},
        "bilateral_grid": {"optimizer": adam(2e-3), "scheduler": warmup_decay(1e-4)},
    }


difix_splatfacto = MethodSpecification(
    config=DifixTrainerConfig(
        method_name="difix-splatfacto",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
        machine=default_machine(),
        pipeline=DifixPipelineConfig(
            datamanager=DifixFullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images_type="uint8",
            ),
            model=DifixSplatfactoModelConfig(),
        ),
        optimizers=splatfacto_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description=(
        "Difix3D+ on splatfacto: progressive pseudo-view updates and fixer post-processing (rgb_fixed); "
        "trains and renders on CPU or CUDA, offline."
    ),
)
