"""Multi-view consistency of a set of images of one scene: how well each view agrees with its nearest views once
they are warped into it by the scene's depth (the 3D consistency that per-frame super-resolution lacks and 3DSR
restores). Used by the super-resolution benchmark on each recipe's SR training targets."""

from __future__ import annotations

from typing import Dict

import torch
from jaxtyping import Float
from torch import Tensor

from difix_ns.geometry.warp import warp_references

__all__ = ["multiview_consistency"]


@torch.no_grad()
def multiview_consistency(
    images: Float[Tensor, "N 3 H W"],
    depths: Float[Tensor, "N H W"],
    c2w: Float[Tensor, "N 3 4"],
    intrinsics: Float[Tensor, "N 3 3"],
    neighbours: int = 2,
    min_valid: float = 0.05,
) -> Dict[str, float]:
    """Mean PSNR (dB) between each view and its `neighbours` nearest views (camera centre distance) warped into it
    by its z-depth (occlusion-tested against theirs; nerfstudio pinhole convention), over the pixels where the warp
    is valid. Pairs whose valid area is below `min_valid` of the frame are skipped.

    Returns {"psnr": mean over pairs, "pairs": pairs used, "valid_fraction": mean valid area}. Identical images of
    an exact scene score high; independent per-view detail (hallucinations, noise) scores lower."""
    n = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (n, *images.shape[-2:]):
        raise ValueError(f"images must be [N, 3, H, W] with depths [N, H, W], got {tuple(images.shape)}, "
                         f"{tuple(depths.shape)}")  # fmt: skip
    if c2w.shape != (n, 3, 4) or intrinsics.shape != (n, 3, 3):
        raise ValueError(
            f"c2w must be [N, 3, 4] and intrinsics [N, 3, 3], got {tuple(c2w.shape)}, {tuple(intrinsics.shape)}"
        )
    if n < 2 or neighbours < 1:
        raise ValueError(f"need at least 2 views and 1 neighbour, got {n} views and neighbours={neighbours}")
    centres = c2w[:, :, 3]
    gaps = torch.cdist(centres, centres)
    gaps.fill_diagonal_(float("inf"))
    scores, fractions = [], []
    for i in range(n):
        near = torch.argsort(gaps[i])[: min(neighbours, n - 1)]
        warped, valid, _ = warp_references(images[near], depths[near], c2w[near], intrinsics[near], depths[i], c2w[i],
                                           intrinsics[i])  # fmt: skip
        for k in range(near.shape[0]):
            mask = valid[k, 0]
            fraction = float(mask.float().mean())
            if fraction < min_valid:
                continue
            mse = ((warped[k] - images[i]) ** 2).mean(0)[mask].mean().clamp_min(1e-10)
            scores.append(float(-10.0 * torch.log10(mse)))
            fractions.append(fraction)
    if not scores:
        raise ValueError(f"no pair of views overlaps on at least {min_valid:.0%} of the frame")
    return {"psnr": sum(scores) / len(scores), "pairs": len(scores), "valid_fraction": sum(fractions) / len(fractions)}
