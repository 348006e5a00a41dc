"""Offline-safe image metrics.

nerfstudio's nerfacto and splatfacto build torchmetrics' LPIPS (AlexNet backbone) in `populate_modules`, which
downloads the backbone weights. On a machine without network that crashes model construction. Here LPIPS is built
only when its backbone weights are already in the torch hub cache; otherwise a stand-in reports the metric as
unavailable, our models drop it from their results, and one warning says why and how to provide the weights.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Iterator
from unittest import mock
from urllib.parse import urlparse

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "LPIPS_METRIC_KEYS",
    "UnavailableMetric",
    "build_lpips",
    "inception_weights_path",
    "lpips_weights_path",
    "offline_lpips",
    "psnr",
]

LPIPS_METRIC_KEYS = ("lpips", "cc_lpips")
"""Metric names that come from LPIPS in nerfstudio's models."""


def lpips_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights that torchmetrics' LPIPS loads."""
    from torchvision.models import AlexNet_Weights

    filename = os.path.basename(urlparse(AlexNet_Weights.DEFAULT.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def inception_weights_path() -> Path:
    """Where torch-fidelity (torchmetrics' FID backbone) looks for its Inception weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(URL_INCEPTION_V3).path)


class UnavailableMetric(nn.Module):
    """Stands in for a metric whose weights are missing: returns NaN, and `available` is False."""

    available = False

    def __init__(self, name: str, reason: str) -> None:
        super().__init__()
        self.name = name
        self.reason = reason

    def forward(self, preds: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Tensor:
        return torch.tensor(float("nan"), device=preds.device)


@functools.lru_cache(maxsize=None)
def _warn_lpips_unavailable(path: str) -> None:
    # lru_cache: the warning is printed once per process, however many models are built.
    from nerfstudio.utils.rich_utils import CONSOLE

    CONSOLE.print(
        f"[bold yellow]LPIPS is left out of the metrics:[/bold yellow] its AlexNet weights are not in the torch "
        f"hub cache ({path}) and this machine cannot download them. To enable LPIPS, copy "
        f"'{Path(path).name}' there (or point TORCH_HOME at a cache that has it)."
    )


def build_lpips(normalize: bool = True) -> nn.Module:
    """torchmetrics' LPIPS (AlexNet) if its weights are cached locally, else an `UnavailableMetric`."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return _build_lpips(LearnedPerceptualImagePatchSimilarity, normalize)


def _build_lpips(lpips_class: type, normalize: bool) -> nn.Module:
    path = lpips_weights_path()
    if not path.is_file():
        _warn_lpips_unavailable(str(path))
        return UnavailableMetric("lpips", f"missing {path}")
    return lpips_class(normalize=normalize)


@contextlib.contextmanager
def offline_lpips() -> Iterator[None]:
    """While active, LPIPS built by name from `torchmetrics.image.lpip` goes through `build_lpips`.

    Used around nerfacto's and splatfacto's `populate_modules`, which import LPIPS from there when they run.
    """
    import torchmetrics.image.lpip

    lpips_class = torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity

    def _factory(normalize: bool = True, **_: object) -> nn.Module:
        return _build_lpips(lpips_class, normalize)

    with mock.patch.object(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", _factory):
        yield


def psnr(image: "Tensor | np.ndarray", target: "Tensor | np.ndarray") -> float:
    """PSNR (dB) of `image` against `target`, both in [0, 1] with the same shape, over all their values
    (torchmetrics' implementation; numpy arrays are compared in float64)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def as_tensor(x: "Tensor | np.ndarray") -> Tensor:
        return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)

    return float(peak_signal_noise_ratio(as_tensor(image), as_tensor(target), data_range=1.0))
