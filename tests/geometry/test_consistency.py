"""`multiview_consistency`: views of one exact scene agree; independent per-view detail does not."""

from __future__ import annotations

import pytest
import torch

from difix_ns.geometry.consistency import multiview_consistency


def _plane_views(count: int = 3, width: int = 24, height: int = 8, depth: float = 4.0, fx: float = 10.0):
    """Cameras along +x (2 px of plane motion apart) looking at a fronto-parallel plane whose texture is linear in
    world x, so the bilinear warp between views is exact."""
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    k = torch.tensor([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    images, c2w = [], []
    for i in range(count):
        x0 = i * 2.0 * depth / fx
        world_x = (cols - width / 2) / fx * depth + x0
        rgb = torch.stack([0.5 + 0.1 * world_x, 0.2 + 0.05 * world_x, 0.8 - 0.07 * world_x])
        images.append(rgb[:, None, :].expand(3, height, width))
        c2w.append(torch.cat([torch.eye(3, dtype=torch.float64), torch.tensor([[x0], [0.0], [0.0]])], 1))
    depths = torch.full((count, height, width), depth, dtype=torch.float64)
    return torch.stack(images), depths, torch.stack(c2w), k.expand(count, 3, 3)


def test_views_of_one_scene_agree_and_per_view_noise_does_not():
    images, depths, c2w, k = _plane_views()
    exact = multiview_consistency(images, depths, c2w, k, neighbours=2)
    assert exact["pairs"] == 6 and exact["psnr"] > 60.0
    assert 0.5 < exact["valid_fraction"] < 1.0, "neighbours see part of each other's frame"
    noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0), dtype=images.dtype)
    score = multiview_consistency(noisy, depths, c2w, k, neighbours=2)["psnr"]
    assert 20.0 < score < 26.0, "two independent noise draws of std 0.05: about 23 dB"


def test_bad_inputs_are_named():
    images, depths, c2w, k = _plane_views()
    with pytest.raises(ValueError, match="depths"):
        multiview_consistency(images, depths[:, :4], c2w, k)
    with pytest.raises(ValueError, match="c2w"):
        multiview_consistency(images, depths, c2w[:, :2], k)
    with pytest.raises(ValueError, match="at least 2 views"):
        multiview_consistency(images[:1], depths[:1], c2w[:1], k[:1])
    far = c2w.clone()
    far[:, 0, 3] *= 1000.0
    with pytest.raises(ValueError, match="no pair of views overlaps"):
        multiview_consistency(images, depths, far, k)
