"""Training losses: L2, SSIM, LPIPS (VGG) and the VGG16 Gram-matrix (style) loss of Difix3D+ for the fixer, and
splatfacto's photometric loss (L1 + SSIM) for Gaussians (super-resolution rounds, compression fine-tuning).

Difix3D+ (Wu et al., CVPR 2025) trains with L = L2 + LPIPS + 0.5 * L_Gram, the Gram loss on VGG16 relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3, switched on after a warm-up. LPIPS and Gram need torchvision's ImageNet VGG16
weights (`vgg16-397923af.pth` in the torch hub cache); where they are absent (this machine: no network) the loss
says so once and falls back to L2 + SSIM, the losses it has. It never returns a silently zero term.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "FixerLoss",
    "GramVGG16",
    "gram_matrix",
    "perceptual_weights_available",
    "photometric_loss",
    "ssim",
    "vgg16_weights_path",
]

# torchvision vgg16().features indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_GRAM_LAYERS = (3, 8, 15, 22, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_weights_path() -> Path:
    """Where torchvision (and the `lpips` package) look for the ImageNet VGG16 weights."""
    from torchvision.models import VGG16_Weights

    filename = os.path.basename(urlparse(VGG16_Weights.IMAGENET1K_V1.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def perceptual_weights_available() -> bool:
    """True when the VGG16 weights are in the torch hub cache (LPIPS' own linear heads ship with `lpips`)."""
    return vgg16_weights_path().is_file()


@functools.lru_cache(maxsize=None)
def _say_perceptual_unavailable(path: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(
        f"[yellow]difix-ns train-fixer: VGG16 weights not found at {path}; LPIPS and the Gram loss are off and the "
        "fixer trains with L2 + SSIM. To use L2 + LPIPS + Gram, put torchvision's vgg16-397923af.pth there."
    )


def ssim(
    x: Float[Tensor, "B C H W"], y: Float[Tensor, "B C H W"], window: int = 11, sigma: float = 1.5
) -> Float[Tensor, "B"]:
    """Differentiable SSIM per image of images in [0, 1]: torchmetrics' (the SSIM `ns-eval` reports), Gaussian
    window; the window shrinks (odd) for images smaller than it."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    window = min(window, x.shape[-1], x.shape[-2])
    window -= 1 - window % 2
    return structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=sigma, kernel_size=window, data_range=1.0, reduction="none"
    )


def photometric_loss(
    pred: Float[Tensor, "H W 3"], target: Float[Tensor, "H W 3"], ssim_weight: float, ssim: Callable
) -> Tensor:
    """(1 - w) L1 + w (1 - SSIM), splatfacto's main loss with w = `ssim_weight`; `ssim` maps two [1,3,H,W]
    images to a scalar SSIM (splatfacto's `model.ssim`)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    l1 = (pred - target).abs().mean()
    d_ssim = 1.0 - ssim(target.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
    return (1.0 - ssim_weight) * l1 + ssim_weight * d_ssim


def gram_matrix(features: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C C"]:
    """Gram matrix of a feature map, normalised by C*H*W."""
    b, c, h, w = features.shape
    f = features.flatten(2)
    return f @ f.transpose(1, 2) / (c * h * w)


class GramVGG16(nn.Module):
    """Gram-matrix loss on frozen VGG16 features (relu1_2 .. relu5_3); images in [0, 1]."""

    def __init__(self, weights: Optional[Path] = None) -> None:
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None)
        if weights is not None:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.features = net.features[: VGG16_GRAM_LAYERS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _grams(self, x: Tensor) -> list[Tensor]:
        h = (x - self.mean) / self.std
        grams = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG16_GRAM_LAYERS:
                grams.append(gram_matrix(h))
        return grams

    def forward(self, pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Tensor:
        gp, gt = self._grams(pred), self._grams(target)
        return sum(F.mse_loss(a, b) for a, b in zip(gp, gt)) / len(gp)

    def train(self, mode: bool = True) -> "GramVGG16":
        return super().train(False)  # frozen feature extractor: always eval


class FixerLoss(nn.Module):
    """L2 + LPIPS + gram_weight * Gram (after `gram_warmup_steps`) with VGG16 weights; L2 + ssim_weight * (1-SSIM)
    without them (announced once). `forward` returns (total, {term: value}) with every active term listed.

    Args:
        perceptual: "auto" (use LPIPS + Gram when the VGG16 weights are present) or "off" (always L2 + SSIM).
        lpips_weight, gram_weight, gram_warmup_steps: Difix3D+ loss settings (1, 0.5, after a warm-up).
        ssim_weight: weight of (1 - SSIM) in the fallback.
    """

    def __init__(
        self,
        perceptual: str = "auto",
        lpips_weight: float = 1.0,
        gram_weight: float = 0.5,
        gram_warmup_steps: int = 1000,
        ssim_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if perceptual not in ("auto", "off"):
            raise ValueError(f"perceptual must be 'auto' or 'off', got {perceptual!r}")
        self.lpips_weight, self.gram_weight, self.ssim_weight = lpips_weight, gram_weight, ssim_weight
        self.gram_warmup_steps = gram_warmup_steps
        self.lpips: Optional[nn.Module] = None
        self.gram: Optional[GramVGG16] = None
        available = perceptual_weights_available()
        if perceptual == "auto" and not available:
            _say_perceptual_unavailable(str(vgg16_weights_path()))
        if perceptual == "auto" and available:
            import lpips

            self.lpips = lpips.LPIPS(net="vgg", pretrained=True, verbose=False).eval().requires_grad_(False)
            self.gram = GramVGG16(vgg16_weights_path())
        self.mode = "l2+lpips+gram" if self.lpips is not None else "l2+ssim"

    def forward(
        self, pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"], step: int = 0
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        terms: Dict[str, Tensor] = {"l2": F.mse_loss(pred, target)}
        total = terms["l2"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(pred, target, normalize=True).mean()
            total = total + self.lpips_weight * terms["lpips"]
            if self.gram is not None and step >= self.gram_warmup_steps and self.gram_weight > 0:
                terms["gram"] = self.gram(pred, target)
                total = total + self.gram_weight * terms["gram"]
        else:
            terms["ssim"] = 1.0 - ssim(pred, target).mean()
            total = total + self.ssim_weight * terms["ssim"]
        return total, terms

    def train(self, mode: bool = True) -> "FixerLoss":
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()
        return self
