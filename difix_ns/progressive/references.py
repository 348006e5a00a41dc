"""Training views as references for the fixer: their poses, and their images on demand (never eval images)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Sequence, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from difix_ns.progressive.poses import nearest_views

__all__ = ["TrainingViews"]


class TrainingViews:
    """Poses and images of the training views (a plain object: the model and pipeline hold it, it saves nothing).

    Args:
        poses: camera-to-world [N, 3, 4] of the training cameras (nerfstudio world frame).
        load_image: returns training image `i` as [H, W, 3] (uint8, or float in [0, 1]) on any device.
        names: file name of each training image (for the files written next to pseudo views).
        cache_size: most images kept in memory by this object.
    """

    def __init__(
        self,
        poses: Float[Tensor, "N 3 4"],
        load_image: Callable[[int], Tensor],
        names: Sequence[str],
        cache_size: int = 32,
    ) -> None:
        if poses.ndim != 3 or poses.shape[1:] != (3, 4) or poses.shape[0] < 1:
            raise ValueError(f"poses must be [N, 3, 4] with N >= 1, got {tuple(poses.shape)}")
        self.poses = poses[:, :3, :4].detach().float().cpu()
        self.names: List[str] = list(names)
        self._load_image = load_image
        self._cache: "OrderedDict[int, Tensor]" = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return self.poses.shape[0]

    def nearest(
        self, poses: Float[Tensor, "M 3 4"], k: int = 1, translation_weight: float = 1.0, rotation_weight: float = 1.0
    ) -> Int[Tensor, "M k"]:
        """Indices of the `k` nearest training views of each pose (nearest first)."""
        k = min(k, len(self))
        indices, _ = nearest_views(poses.detach().float().cpu(), self.poses, k, translation_weight, rotation_weight)
        return indices

    def image(self, index: int) -> Float[Tensor, "H W 3"]:
        """Training image `index` as float [H, W, 3] in [0, 1] on the CPU."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image = self._load_image(index)
        image = (image.float() / 255.0 if image.dtype == torch.uint8 else image.float()).detach().cpu()[..., :3]
        self._cache[index] = image
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image

    def references(self, indices: Int[Tensor, "B R"], size: Tuple[int, int]) -> Float[Tensor, "B R 3 H W"]:
        """Reference images for a batch: training images `indices`, resized to `size` = (H, W)."""
        from difix_ns.fixers.base import resize_refs

        rows = []
        for row in indices.tolist():
            views = [resize_refs(self.image(i).permute(2, 0, 1)[None, None], size)[0, 0] for i in row]
            rows.append(torch.stack(views))
        return torch.stack(rows)
