"""Masked metrics and co-visibility mask files (`difix_ns.geometry.covis`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from difix_ns.geometry.covis import covisibility_mask_paths, load_covisibility_mask, masked_psnr, masked_ssim


def _pair(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 24, 20, generator=generator, dtype=torch.float64)
    preds = (target + 0.1 * torch.randn(2, 3, 24, 20, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return preds, target


def test_full_mask_gives_the_full_image_metrics():
    preds, target = _pair()
    full = torch.ones(2, 1, 24, 20, dtype=torch.bool)
    for i in range(2):
        expected_psnr = peak_signal_noise_ratio(preds[i : i + 1], target[i : i + 1], data_range=1.0)
        expected_ssim = structural_similarity_index_measure(preds[i : i + 1], target[i : i + 1], data_range=1.0)
        # torchmetrics: float32 log
        assert float(masked_psnr(preds, target, full)[i]) == pytest.approx(float(expected_psnr), rel=1e-6)
        assert float(masked_ssim(preds, target, full)[i]) == pytest.approx(float(expected_ssim), rel=1e-10)


def test_only_masked_pixels_count():
    preds, target = _pair(1)
    mask = torch.zeros(2, 1, 24, 20, dtype=torch.bool)
    mask[:, :, 4:14, 3:11] = True
    spoiled = torch.where(mask, preds, 1.0 - target)  # anything outside the mask changes, nothing inside
    psnr_inside = peak_signal_noise_ratio(preds[0, :, 4:14, 3:11], target[0, :, 4:14, 3:11], data_range=1.0)
    assert float(masked_psnr(spoiled, target, mask)[0]) == pytest.approx(float(psnr_inside), rel=1e-6)
    assert float(masked_psnr(spoiled, target, mask)[0]) > float(masked_psnr(spoiled, target, ~mask)[0]) + 10
    # The SSIM map reads a window around each pixel, so outside pixels near the mask edge still count a little.
    _, ssim_map = structural_similarity_index_measure(spoiled, target, data_range=1.0, return_full_image=True)
    assert float(masked_ssim(spoiled, target, mask)[1]) == pytest.approx(float(ssim_map[1, :, 4:14, 3:11].mean()))
    empty = torch.zeros_like(mask)
    assert math.isnan(float(masked_psnr(preds, target, empty)[0]))


def test_bad_shapes_raise_value_errors():
    preds, target = _pair()
    mask = torch.ones(2, 1, 24, 20, dtype=torch.bool)
    with pytest.raises(ValueError, match="target"):
        masked_psnr(preds, target[:, :, :-1], mask)
    with pytest.raises(ValueError, match="mask"):
        masked_ssim(preds, target, mask[:, :, :-1])
    with pytest.raises(ValueError, match="preds"):
        masked_psnr(preds[0], target[0], mask[0])


def test_mask_files_by_image_name(tmp_path: Path):
    (tmp_path / "covis").mkdir()
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:4, 2:7] = 255
    Image.fromarray(mask).save(tmp_path / "covis" / "eval_000.png")
    paths = covisibility_mask_paths(tmp_path, [tmp_path / "images" / "eval_000.png", Path("images/eval_001.jpg")])
    assert paths == [tmp_path / "covis" / "eval_000.png", None]
    loaded = load_covisibility_mask(paths[0])
    assert loaded.dtype == torch.bool and torch.equal(loaded, torch.from_numpy(mask > 0))
    half = load_covisibility_mask(paths[0], (3, 4))  # nerfstudio's downscaled images keep full-size masks
    assert torch.equal(half, torch.from_numpy(mask[1::2, 1::2] > 0))  # PIL: the pixel under each centre
