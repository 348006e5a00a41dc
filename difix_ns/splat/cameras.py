"""Camera conventions between nerfstudio (OpenGL camera-to-world) and gsplat (OpenCV world-to-camera)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["viewmats_from_camera_to_worlds"]


def viewmats_from_camera_to_worlds(camera_to_worlds: Float[Tensor, "C 3 4"]) -> Float[Tensor, "C 4 4"]:
    """World-to-camera matrices in OpenCV axes (x right, y down, z forward) for gsplat.

    nerfstudio's camera looks down -z with y up; flipping the y and z axes gives OpenCV's camera. Same math as
    splatfacto's `get_viewmat`, without its `torch.compile` (which needs a C++ toolchain and a slow first call on CPU).
    """
    if camera_to_worlds.ndim != 3 or camera_to_worlds.shape[-2:] != (3, 4):
        raise ValueError(f"camera_to_worlds must have shape [C, 3, 4], got {tuple(camera_to_worlds.shape)}")
    flip = torch.tensor([1.0, -1.0, -1.0], device=camera_to_worlds.device, dtype=camera_to_worlds.dtype)
    rotation = camera_to_worlds[:, :3, :3] * flip  # scales the y and z columns
    translation = camera_to_worlds[:, :3, 3:4]
    rotation_inv = rotation.transpose(1, 2)
    viewmats = torch.eye(4, device=camera_to_worlds.device, dtype=camera_to_worlds.dtype).repeat(
        camera_to_worlds.shape[0], 1, 1
    )
    viewmats[:, :3, :3] = rotation_inv
    viewmats[:, :3, 3:4] = -rotation_inv @ translation
    return viewmats
