"""difix-splatfacto: splatfacto that trains and renders on any device, offline.

What it changes in nerfstudio's splatfacto, and why:
- rasterization goes through `difix_ns.splat.rasterize.rasterization`: gsplat's fused CUDA kernels on CUDA, a
  PyTorch path (gsplat's projection and SH + our depth-ordered compositing) on CPU;
- no hard-coded `.cuda()` (seed-point initialisation and intrinsics follow the model's device);
- LPIPS is built only when its weights are available locally (`difix_ns.metrics`);
- Difix3D/Difix3D+ (`difix_ns.models.fixing`): the fixer (`config.fixer`, built at first use), post-processing
  (`rgb_fixed`, `*_fixed` metrics, the viewer toggle), and pseudo views in the loss: a batch from
  `DifixFullImageDatamanager` marked `difix_pseudo` has its main loss scaled by `pseudo_loss_weight` and masked
  by the render's alpha (`mask`, as splatfacto masks any view). Pseudo cameras carry no `cam_idx`, so neither the
  camera optimizer nor the bilateral grid touches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Type, Union

import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import (
    RGB2SH,
    SplatfactoModel,
    SplatfactoModelConfig,
    num_sh_bases,
    random_quat_tensor,
)
from torch import Tensor

from difix_ns.metrics import offline_lpips
from difix_ns.models.fixing import DifixFixingConfig, DifixFixingMixin
from difix_ns.models.metrics_mixin import OfflineMetricsMixin
from difix_ns.splat.cameras import viewmats_from_camera_to_worlds

__all__ = ["DifixSplatfactoModel", "DifixSplatfactoModelConfig", "gaussians_from_points"]


@dataclass
class DifixSplatfactoModelConfig(SplatfactoModelConfig, DifixFixingConfig):
    """Splatfacto's settings, unchanged in name and meaning; difix-specific settings are added here."""

    _target: Type = field(default_factory=lambda: DifixSplatfactoModel)


def gaussians_from_points(
    points: Float[Tensor, "N 3"],
    colors: UInt8[Tensor, "N 3"],
    sh_degree: int,
    neighbor_distances: Float[Tensor, "N 3"],
) -> Dict[str, Tensor]:
    """Initial Gaussian parameters from a coloured point cloud, as splatfacto initialises from seed points.

    Scales are the log mean distance to the 3 nearest neighbours; colours become the DC SH coefficient (or a
    logit colour when `sh_degree == 0`); opacities start at 0.1.
    """
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [N, 3], got {tuple(points.shape)}, {tuple(colors.shape)}")
    num_points = points.shape[0]
    rgb = colors.float() / 255.0
    features = torch.zeros((num_points, num_sh_bases(sh_degree), 3), dtype=torch.float32)
    features[:, 0] = RGB2SH(rgb) if sh_degree > 0 else torch.logit(rgb, eps=1e-10)
    return {
        "means": points.float(),
        "scales": torch.log(neighbor_distances.mean(dim=-1, keepdim=True)).repeat(1, 3),
        "quats": random_quat_tensor(num_points),
        "features_dc": features[:, 0],
        "features_rest": features[:, 1:],
        "opacities": torch.logit(torch.full((num_points, 1), 0.1)),
    }


class DifixSplatfactoModel(DifixFixingMixin, OfflineMetricsMixin, SplatfactoModel):
    """Splatfacto on any device (see module docstring)."""

    config: DifixSplatfactoModelConfig

    def populate_modules(self) -> None:
        # Splatfacto's seed-point branch calls `.cuda()`; let it build everything from its random branch with
        # seeds hidden, then replace the Gaussians by ones made from the seeds on the CPU.
        seed_points, self.seed_points = self.seed_points, None
        try:
            with offline_lpips():
                super().populate_modules()
        finally:
            self.seed_points = seed_points
        if seed_points is not None and not self.config.random_init and seed_points[0].shape[0] > 0:
            points, colors = seed_points
            distances, _ = self.k_nearest_sklearn(points.float(), 3)
            params = gaussians_from_points(points, colors, self.config.sh_degree, torch.from_numpy(distances))
            self.gauss_params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})
        self._setup_fixing()

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Splatfacto's losses; on a pseudo view the main loss is scaled by `pseudo_loss_weight` (its `mask`,
        the render's alpha >= threshold, is applied by splatfacto like any mask)."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if batch.get("difix_pseudo", False):
            loss_dict["main_loss"] = loss_dict["main_loss"] * self._pseudo_weight()
        return loss_dict

    def _render_gaussians(self) -> Dict[str, Tensor]:
        """Activated Gaussian parameters to render, restricted to the crop box when one is set (eval only)."""
        params = {
            "means": self.means,
            "quats": self.quats,
            "scales": self.scales,
            "opacities": self.opacities,
            "features_dc": self.features_dc,
            "features_rest": self.features_rest,
        }
        if self.crop_box is not None and not self.training:
            keep = self.crop_box.within(self.means).squeeze()
            params = {k: v[keep] for k, v in params.items()}
        return {
            "means": params["means"],
            "quats": params["quats"],
            "scales": torch.exp(params["scales"]),
            "opacities": torch.sigmoid(params["opacities"]).squeeze(-1),
            "colors": torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1),
        }

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Render one camera: rgb [H, W, 3], depth [H, W, 1] (eval), accumulation [H, W, 1], background [3]."""
        from difix_ns.splat.rasterize import rasterization

        if not isinstance(camera, Cameras):
            raise TypeError(f"get_outputs expects a Cameras object, got {type(camera).__name__}")
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError(f"training renders one camera at a time, got {camera.shape[0]}")
            camera_to_worlds = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_worlds = camera.camera_to_worlds

        gaussians = self._render_gaussians()
        if gaussians["means"].shape[0] == 0:
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)

        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        Ks = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(scale)
        self.last_size = (height, width)

        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        colors = gaussians.pop("colors")
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors).squeeze(1), None

        render, alpha, self.info = rasterization(
            **gaussians,
            colors=colors,
            viewmats=viewmats_from_camera_to_worlds(camera_to_worlds),
            Ks=Ks,
            width=width,
            height=height,
            near_plane=0.01,
            far_plane=1e10,
            sh_degree=sh_degree,
            render_mode=render_mode,
            rasterize_mode=self.config.rasterize_mode,
            absgrad=self.strategy.absgrad,
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training and camera.metadata and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)

        depth = None
        if render_mode == "RGB+ED":
            depth = torch.where(alpha > 0, render[..., 3:4], render[..., 3:4].detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}
