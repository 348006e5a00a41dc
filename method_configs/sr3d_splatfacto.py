"""`ns-train sr3d-splatfacto`: 3D-consistent super-resolution (3DSR, ICCV 2025) on splatfacto, on any device, offline.

The dataset is given at high resolution (HR); the method trains on its views downscaled by `--pipeline.superres.factor`
(LR), then runs `rounds` rounds of SR targets + 3DGS training at HR, and is evaluated at HR on the held-out views.
The SR settings live in `--pipeline.superres.*`; how the stages work is in `difix_ns/superres/pipeline.py`.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.plugins.types import MethodSpecification

from difix_ns.method_configs._common import default_machine
from difix_ns.method_configs.difix_splatfacto import splatfacto_optimizers
from difix_ns.superres.config import SuperResConfig
from difix_ns.superres.datamanager import Sr3dDatamanagerConfig
from difix_ns.superres.model import Sr3dSplatfactoModelConfig
from difix_ns.superres.pipeline import Sr3dPipelineConfig, Sr3dTrainerConfig

__all__ = ["sr3d_splatfacto"]

_SCHEDULE = SuperResConfig()

sr3d_splatfacto = MethodSpecification(
    config=Sr3dTrainerConfig(
        method_name="sr3d-splatfacto",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=1000,
        steps_per_eval_all_images=1000,
        max_num_iterations=_SCHEDULE.total_iterations,
        mixed_precision=False,
        machine=default_machine(),
        pipeline=Sr3dPipelineConfig(
            datamanager=Sr3dDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images_type="uint8",
            ),
            model=Sr3dSplatfactoModelConfig(),
            superres=SuperResConfig(),
        ),
        optimizers=splatfacto_optimizers(_SCHEDULE.total_iterations),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description=(
        "3D-consistent super-resolution (3DSR) on splatfacto: LR training, then rounds of SR targets (self-trained "
        "NAFNet or bicubic back-end) and HR 3DGS training; trains and renders on CPU or CUDA, offline."
    ),
)
