"""Co-visibility masks on disk and the masked metrics of DyCheck (Gao et al., NeurIPS 2022, "Monocular Dynamic
View Synthesis: A Reality Check"): PSNR and SSIM over the pixels of an evaluation view that at least one training
view observes.

A dataset carries the mask of an image `<data>/<any folder>/<name>.<ext>` as `<data>/covis/<name>.png` (8-bit, 255
where co-visible, 0 elsewhere), as `difix-ns synth` writes them (exact) or as an estimate from rendered depth
(`difix_ns.geometry.covisibility_mask`).

- masked PSNR = -10 log10 of the mean squared error over the masked pixels (all three channels), data range 1;
- masked SSIM = the mean of torchmetrics' SSIM map (`return_full_image=True`, default Gaussian window) over the
  masked pixels and channels; with a full mask both equal the full-image PSNR and SSIM.
An empty mask gives NaN (no pixel to average over).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = [
    "COVIS_FOLDER",
    "covisibility_mask_paths",
    "load_covisibility_mask",
    "masked_psnr",
    "masked_ssim",
]

COVIS_FOLDER = "covis"
"""Folder of the dataset (next to transforms.json) that holds the co-visibility masks."""


def covisibility_mask_paths(data_dir: Path, image_filenames: Sequence[Path]) -> List[Optional[Path]]:
    """The mask file of each image (`<data_dir>/covis/<image stem>.png`), or None where there is none."""
    folder = Path(data_dir) / COVIS_FOLDER
    paths = [folder / f"{Path(name).stem}.png" for name in image_filenames]
    return [path if path.is_file() else None for path in paths]


def load_covisibility_mask(path: Path, size: Optional[Sequence[int]] = None) -> Bool[Tensor, "H W"]:
    """Read a mask PNG (any PIL mode; > 127 in its grey value is co-visible). With `size` = (H, W) different from
    the file's, the mask is resized nearest-neighbour (a dataset downscaled by nerfstudio keeps full-size masks)."""
    from PIL import Image

    with Image.open(path) as image:
        grey = image.convert("L")
        if size is not None and (grey.height, grey.width) != tuple(size):
            grey = grey.resize((int(size[1]), int(size[0])), Image.NEAREST)
        return torch.from_numpy(np.asarray(grey) > 127)


def _check(preds: Tensor, target: Tensor, mask: Tensor) -> None:
    if preds.ndim != 4 or preds.shape != target.shape:
        raise ValueError(
            f"preds and target must both be [B, C, H, W], got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    if mask.shape != (preds.shape[0], 1, *preds.shape[2:]):
        raise ValueError(
            f"mask must be [B, 1, H, W] = {(preds.shape[0], 1, *preds.shape[2:])}, got {tuple(mask.shape)}"
        )


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    weights = mask.expand_as(values).to(values.dtype)
    return (values * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))


def masked_psnr(
    preds: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], mask: Bool[Tensor, "B 1 H W"]
) -> Float[Tensor, "B"]:
    """PSNR (dB, data range 1) of each image over its masked pixels."""
    _check(preds, target, mask)
    return -10.0 * torch.log10(_masked_mean((preds - target) ** 2, mask))


def masked_ssim(
    preds: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], mask: Bool[Tensor, "B 1 H W"]
) -> Float[Tensor, "B"]:
    """Mean of the SSIM map of each image over its masked pixels."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(preds, target, mask)
    _, ssim_map = structural_similarity_index_measure(preds, target, data_range=1.0, return_full_image=True)
    return _masked_mean(ssim_map, mask)
