"""Data manager of sr3d-splatfacto: the HR dataset as nerfstudio loads it, served at the stage's resolution.

nerfstudio loads and caches the HR training views and cameras (`cached_train`, `train_dataset.cameras`) and the
HR evaluation views, unchanged. Given the factor (`set_factor`), the LR views are the HR views downscaled by it
(antialiased bicubic; floor of H/factor, W/factor, as nerfstudio's downscale), made once on first use. Training
batches then depend on the SR targets set with `set_targets`:
- none (the LR stage): the LR view at its LR camera (the HR camera rescaled by 1/factor);
- targets (an SR round): the round's SR target at the HR camera, with the LR view as `sr3d_lr_image` [h, w, 3].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Generic, List, Optional, Tuple, Type

import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import TDataset
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from torch import Tensor

from difix_ns.data.datamanagers import ValidatedDatamanager
from difix_ns.superres.config import check_lr_size
from difix_ns.superres.ops import downsample, lr_size

__all__ = ["Sr3dDatamanager", "Sr3dDatamanagerConfig"]


@dataclass
class Sr3dDatamanagerConfig(FullImageDatamanagerConfig):
    """Full-image data manager of sr3d-splatfacto (HR dataset; LR views derived by the factor)."""

    _target: Type = field(default_factory=lambda: Sr3dDatamanager)
    validate_data: bool = True
    """Check every image, camera and split before loading (one error listing every problem with its file name)."""


class Sr3dDatamanager(ValidatedDatamanager, FullImageDatamanager, Generic[TDataset]):
    """HR dataset, LR views and SR targets (see module docstring)."""

    config: Sr3dDatamanagerConfig

    def _after_init(self) -> None:
        self.factor: Optional[int] = None
        self._lr_images: Optional[List[Tensor]] = None
        self._targets: Optional[List[Tensor]] = None

    # ---------------------------------------------------------------- the LR views
    def set_factor(self, factor: int) -> None:
        """Use LR views = HR / `factor`; raises ValueError when a training view would be below the minimum size."""
        cameras = self.train_dataset.cameras
        for i in range(cameras.shape[0]):
            name = self.train_dataset.image_filenames[i].name
            check_lr_size(int(cameras.height[i]), int(cameras.width[i]), factor, what=f"training view {name}")
        self.factor = factor
        self._lr_images = None

    def hr_image(self, index: int) -> Float[Tensor, "H W 3"]:
        """Training view `index` at HR, float in [0, 1], on the training device."""
        image = self.cached_train[index]["image"]
        if image.shape[-1] != 3:
            raise ValueError(f"sr3d-splatfacto needs RGB training images; view {index} has {image.shape[-1]} channels")
        image = image.to(self.device)
        return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()

    @property
    def lr_images(self) -> List[Float[Tensor, "h w 3"]]:
        """The LR training views (antialiased bicubic downsample of the HR views by the factor)."""
        if self.factor is None:
            raise RuntimeError("Sr3dDatamanager.set_factor was not called")
        if self._lr_images is None:
            if any("mask" in item for item in self.cached_train):
                raise ValueError("sr3d-splatfacto does not support datasets with masks")
            views = []
            for i in range(len(self.cached_train)):
                hr = self.hr_image(i)
                size = lr_size(hr.shape[0], hr.shape[1], self.factor)
                views.append(downsample(hr.permute(2, 0, 1)[None], size)[0].permute(1, 2, 0).contiguous())
            self._lr_images = views
        return self._lr_images

    def lr_camera(self, camera: Cameras, index: int) -> Cameras:
        """`camera` (the HR camera of training view `index`) rescaled to the LR view's size."""
        assert self.factor is not None
        h, w = self.lr_images[index].shape[:2]
        lr = camera.to(camera.device)  # a new Cameras object; rescaling reassigns its fields
        lr.rescale_output_resolution(1.0 / self.factor)
        lr.height = torch.full_like(lr.height, h)
        lr.width = torch.full_like(lr.width, w)
        return lr

    # ---------------------------------------------------------------- SR targets
    @property
    def targets(self) -> Optional[List[UInt8[Tensor, "H W 3"]]]:
        """The current SR targets (None in the LR stage)."""
        return self._targets

    def set_targets(self, targets: Optional[List[UInt8[Tensor, "H W 3"]]]) -> None:
        """Train on these HR targets (one per training view, uint8) from now on; None: the LR stage."""
        if targets is not None:
            if len(targets) != len(self.train_dataset):
                raise ValueError(f"{len(targets)} SR targets for {len(self.train_dataset)} training views")
            cameras = self.train_dataset.cameras
            for i, t in enumerate(targets):
                expected = (int(cameras.height[i]), int(cameras.width[i]), 3)
                if tuple(t.shape) != expected or t.dtype != torch.uint8:
                    raise ValueError(f"SR target {i}: {tuple(t.shape)} {t.dtype}, expected uint8 {expected}")
            targets = [t.to(self.device) for t in targets]
        self._targets = targets

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        camera, data = super().next_train(step)
        index = int(camera.metadata["cam_idx"])
        if self._targets is None:
            data["image"] = self.lr_images[index]
            return self.lr_camera(camera, index), data
        data["image"] = self._targets[index]
        data["sr3d_lr_image"] = self.lr_images[index]
        return camera, data
