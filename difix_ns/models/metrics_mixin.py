"""Evaluation metrics shared by difix-ns models: nerfstudio's metrics, minus the ones whose weights are absent."""

from __future__ import annotations

import math
from typing import Dict, Tuple

from torch import Tensor

from difix_ns.metrics import LPIPS_METRIC_KEYS, UnavailableMetric

__all__ = ["OfflineMetricsMixin"]


class OfflineMetricsMixin:
    """Mix into a nerfstudio Model whose `populate_modules` ran under `offline_lpips`.

    When LPIPS could not be built (no local backbone weights), its keys are removed from the evaluation metrics
    rather than reported as a number: an absent metric is visible, a made-up one is not.
    """

    lpips: object

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)  # type: ignore[misc]
        if isinstance(self.lpips, UnavailableMetric):
            for key in LPIPS_METRIC_KEYS:
                value = metrics.pop(key, None)
                assert value is None or math.isnan(value), "an unavailable metric produced a number"
        return metrics, images
