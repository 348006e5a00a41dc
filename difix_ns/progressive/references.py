"""Training views as references for the fixer: their poses, and their images on demand (never eval images).

With their intrinsics and a depth source (the model's z-depth render of a training camera, given by the pipeline)
they also warp into any target camera (`warped`, by `difix_ns.geometry.warp_references`): the fixer then sees
real texture from the training photos aligned with the render, where the geometry says the reference sees it."""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from difix_ns.fixers.base import WarpedViews, resize_refs
from difix_ns.progressive.poses import nearest_views

__all__ = ["TrainingViews"]


class TrainingViews:
    """Poses and images of the training views (a plain object: the model and pipeline hold it, it saves nothing).

    Args:
        poses: camera-to-world [N, 3, 4] of the training cameras (nerfstudio world frame).
        load_image: returns training image `i` as [H, W, 3] (uint8, or float in [0, 1]) on any device.
        names: file name of each training image (for the files written next to pseudo views).
        cache_size: most images kept in memory by this object.
        intrinsics: [N, 3, 3] pixel intrinsics of the training cameras (needed by `warped`).
    """

    def __init__(
        self,
        poses: Float[Tensor, "N 3 4"],
        load_image: Callable[[int], Tensor],
        names: Sequence[str],
        cache_size: int = 32,
        intrinsics: Optional[Float[Tensor, "N 3 3"]] = None,
    ) -> None:
        if poses.ndim != 3 or poses.shape[1:] != (3, 4) or poses.shape[0] < 1:
            raise ValueError(f"poses must be [N, 3, 4] with N >= 1, got {tuple(poses.shape)}")
        if intrinsics is not None and tuple(intrinsics.shape) != (poses.shape[0], 3, 3):
            raise ValueError(f"intrinsics must be [{poses.shape[0]}, 3, 3], got {tuple(intrinsics.shape)}")
        self.poses = poses[:, :3, :4].detach().float().cpu()
        self.intrinsics = None if intrinsics is None else intrinsics.detach().float().cpu()
        self._depth_of: Optional[Callable[[int], Tensor]] = None
        self._depths: Dict[int, Tensor] = {}
        self.names: List[str] = list(names)
        self._load_image = load_image
        self._cache: "OrderedDict[int, Tensor]" = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return self.poses.shape[0]

    @functools.cached_property
    def spacing(self) -> float:
        """Median distance from each training pose to its nearest other one (`camera_spacing`, unit weights)."""
        from difix_ns.progressive.poses import camera_spacing

        return camera_spacing(self.poses)

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
        rows = []
        for row in indices.tolist():
            views = [resize_refs(self.image(i).permute(2, 0, 1)[None, None], size)[0, 0] for i in row]
            rows.append(torch.stack(views))
        return torch.stack(rows)

    # ---------------------------------------------------------------- depth-warped references
    def set_depth_source(self, depth_of: Optional[Callable[[int], Tensor]]) -> None:
        """`depth_of(i)`: z-depth [H, W] of training view i (the model's render); None turns warping off."""
        self._depth_of = depth_of
        self._depths.clear()

    def forget_depths(self) -> None:
        """Drop the cached depths (the model changed: the next `warped` renders them again)."""
        self._depths.clear()

    @property
    def can_warp(self) -> bool:
        return self._depth_of is not None and self.intrinsics is not None

    def depth(self, index: int) -> Float[Tensor, "H W"]:
        """z-depth of training view `index` from the depth source (cached until `forget_depths`)."""
        if self._depth_of is None:
            raise ValueError("these training views have no depth source (set_depth_source)")
        if index not in self._depths:
            depth = self._depth_of(index).detach().float().cpu()
            self._depths[index] = depth.reshape(depth.shape[0], depth.shape[1])
        return self._depths[index]

    def warped(
        self,
        indices: Int[Tensor, "B K"],
        target_c2w: Float[Tensor, "B 3 4"],
        target_intrinsics: Float[Tensor, "B 3 3"],
        target_depth: Float[Tensor, "B H W"],
    ) -> Optional[WarpedViews]:
        """Training views `indices` warped into each target camera with its z-depth (None when `can_warp` is
        False). Their own depth decides occlusion; colours are the real photos."""
        from difix_ns.geometry.warp import warp_references

        if not self.can_warp:
            return None
        assert self.intrinsics is not None
        rgbs, masks = [], []
        for b, row in enumerate(indices.tolist()):
            ref_depth = torch.stack([self.depth(i) for i in row])
            photos = [self.image(i).permute(2, 0, 1)[None, None] for i in row]
            ref_rgb = torch.cat([resize_refs(p, tuple(ref_depth.shape[-2:]))[0] for p in photos])
            rgb, valid, _ = warp_references(
                ref_rgb, ref_depth, self.poses[row], self.intrinsics[row], target_depth[b].float().cpu(),
                target_c2w[b].float().cpu(), target_intrinsics[b].float().cpu(),
            )
            rgbs.append(rgb.clamp(0, 1))
            masks.append(valid.float())
        return WarpedViews(torch.stack(rgbs), torch.stack(masks))
