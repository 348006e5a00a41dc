"""Stateless image operations of 3DSR: resampling, the colour fix and the loss. Images are [B, 3, H, W] in [0, 1]
unless a function says [H, W, 3] (nerfstudio's layout)."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from difix_ns.training.losses import photometric_loss

__all__ = ["color_fix", "downsample", "lr_size", "sr3d_loss", "upsample"]


def lr_size(height: int, width: int, factor: int) -> Tuple[int, int]:
    """Low-resolution (height, width) of an HR view: floor division, as nerfstudio's downscale."""
    return height // factor, width // factor


def downsample(images: Float[Tensor, "B 3 H W"], size: Tuple[int, int]) -> Float[Tensor, "B 3 h w"]:
    """Antialiased bicubic downsample to `size` (h, w), clamped to [0, 1]."""
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)


def upsample(images: Float[Tensor, "B 3 h w"], size: Tuple[int, int]) -> Float[Tensor, "B 3 H W"]:
    """Bicubic upsample to `size` (H, W), clamped to [0, 1]."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def color_fix(sr: Float[Tensor, "B 3 H W"], lr: Float[Tensor, "B 3 h w"]) -> Float[Tensor, "B 3 H W"]:
    """Keep the SR image's high frequencies and take its low frequencies (what survives the x1/factor downsample)
    from the LR view: sr - up(down(sr)) + up(lr). Its downsample then matches the LR view's up to resampling."""
    size = tuple(sr.shape[-2:])
    low = upsample(downsample(sr, tuple(lr.shape[-2:])), size)
    return (sr - low + upsample(lr, size)).clamp(0.0, 1.0)


def sr3d_loss(
    render: Float[Tensor, "H W 3"],
    sr_target: Float[Tensor, "H W 3"],
    lr_image: Float[Tensor, "h w 3"],
    ssim_weight: float,
    lambda_lr: float,
    ssim: Callable,
) -> Tuple[Dict[str, Tensor], Dict[str, object]]:
    """The 3DSR round loss: photometric loss to the SR target at HR, plus `lambda_lr` times the same loss between
    the antialiased downsample of the render to the LR view's size and the LR view.

    Returns ({"sr_loss", "lr_loss"}, meta with the `lr_render` [h, w, 3] that entered the LR term)."""
    size = tuple(lr_image.shape[:2])
    lr_render = downsample(render.permute(2, 0, 1)[None], size)[0].permute(1, 2, 0)
    losses = {
        "sr_loss": photometric_loss(render, sr_target, ssim_weight, ssim),
        "lr_loss": lambda_lr * photometric_loss(lr_render, lr_image, ssim_weight, ssim),
    }
    return losses, {"lr_render": lr_render}
