"""Evaluation metrics shared by difix-ns models: nerfstudio's metrics, minus the ones whose weights are absent, plus
the co-visibility-masked metrics of DyCheck where the dataset has masks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from difix_ns.geometry.covis import (
    COVIS_FOLDER,
    covisibility_mask_paths,
    load_covisibility_mask,
    masked_psnr,
    masked_ssim,
)
from difix_ns.metrics import LPIPS_METRIC_KEYS, UnavailableMetric

__all__ = ["MASKED_METRIC_KEYS", "OfflineMetricsMixin"]

MASKED_METRIC_KEYS = ("mpsnr", "mssim")
"""Co-visibility-masked PSNR and SSIM (`difix_ns.geometry.covis`), reported when every eval image has a mask."""


class OfflineMetricsMixin:
    """Mix into a nerfstudio Model whose `populate_modules` ran under `offline_lpips`.

    - When LPIPS could not be built (no local backbone weights), its keys are removed from the evaluation metrics
      rather than reported as a number: an absent metric is visible, a made-up one is not.
    - Masked metrics: once the pipeline has called `attach_eval_images` and every eval image has a co-visibility
      mask (`<data>/covis/<image name>.png`), each eval image also gets `mpsnr` and `mssim`, computed on the same
      ground truth and render as nerfstudio's `psnr`/`ssim` (the two halves of its `img`). Otherwise they are left
      out, all of them (ns-eval averages the keys of every image), with one message saying why.
    """

    lpips: object
    _covis_paths: Optional[List[Path]] = None

    def attach_eval_images(self, data: Path, image_filenames: Sequence[Path]) -> None:
        """Look up the co-visibility masks of the eval images `image_filenames` of the dataset `data` (a folder,
        or its transforms.json)."""
        from nerfstudio.utils.rich_utils import CONSOLE

        data_dir = Path(data).parent if Path(data).suffix == ".json" else Path(data)  # as nerfstudio's parser
        paths = covisibility_mask_paths(data_dir, image_filenames)
        found = sum(path is not None for path in paths)
        self._covis_paths = paths if paths and found == len(paths) else None  # type: ignore[assignment]
        if self._covis_paths is None:
            CONSOLE.print(
                f"[yellow]Masked metrics ({', '.join(MASKED_METRIC_KEYS)}) are left out: {found} of {len(paths)} "
                f"eval images have a co-visibility mask in {data_dir / COVIS_FOLDER}.[/yellow]"
            )

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)  # type: ignore[misc]
        if isinstance(self.lpips, UnavailableMetric):
            for key in LPIPS_METRIC_KEYS:
                value = metrics.pop(key, None)
                assert value is None or math.isnan(value), "an unavailable metric produced a number"
        if self._covis_paths is not None and "image_idx" in batch:
            metrics.update(self._masked_metrics(images["img"], outputs["rgb"].shape[1], int(batch["image_idx"])))
        return metrics, images

    def _masked_metrics(self, combined: Tensor, width: int, image_idx: int) -> Dict[str, float]:
        """mpsnr and mssim of eval image `image_idx` from nerfstudio's side-by-side `img` [H, 2W, 3]."""
        if combined.ndim != 3 or combined.shape[1] != 2 * width or combined.shape[2] != 3:
            raise ValueError(f"expected the side-by-side image [H, {2 * width}, 3], got {tuple(combined.shape)}")
        assert self._covis_paths is not None
        gt = combined[:, :width].permute(2, 0, 1)[None].float()
        pred = combined[:, width:].permute(2, 0, 1)[None].float()
        mask = load_covisibility_mask(self._covis_paths[image_idx], gt.shape[-2:]).to(gt.device)[None, None]
        return {"mpsnr": float(masked_psnr(pred, gt, mask)), "mssim": float(masked_ssim(pred, gt, mask))}
