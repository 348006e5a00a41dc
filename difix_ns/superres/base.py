"""The interface of the super-resolution back-ends, and how a round's SR targets are made from it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from difix_ns.superres.ops import color_fix

__all__ = ["SuperResBackend", "sr_targets"]


class SuperResBackend(ABC):
    """image batch in -> HR image batch out: `upscale(lr [B,3,h,w], render [B,3,H,W] | None, size, indices)`.

    `render` is the current 3DGS render of the same view at HR (None before there is one); a back-end may
    condition on it. `indices` are the training-view indices of the batch (None where the caller has none); a
    back-end with per-view state (`sd-x4`'s latents) needs them. `prepare` runs once before the first round with
    all LR training views (e.g. to train); `resume` tells the back-end how many rounds are done (0 = fresh run)."""

    name: str = ""

    def prepare(self, lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> None:
        """Called once before the first round; `folder` is where the back-end may write files."""

    def resume(self, completed_rounds: int) -> None:
        """Called after `prepare`/`load` with the number of rounds already done (a resumed run: > 0)."""

    @abstractmethod
    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """SR images of size `size` (H, W) in [0, 1]."""


@torch.no_grad()
def sr_targets(
    backend: SuperResBackend,
    lr: Float[Tensor, "B 3 h w"],
    render: Optional[Float[Tensor, "B 3 H W"]],
    size: tuple,
    apply_color_fix: bool,
    indices: Optional[Sequence[int]] = None,
) -> Float[Tensor, "B 3 H W"]:
    """SR targets of one round: the back-end's output, colour-fixed to the LR views when asked; `indices` are the
    training views of the batch (for back-ends with per-view state)."""
    if render is not None and tuple(render.shape[-2:]) != tuple(size):
        raise ValueError(f"render {tuple(render.shape)} does not have the HR size {tuple(size)}")
    if indices is not None and len(indices) != lr.shape[0]:
        raise ValueError(f"{len(indices)} view indices for a batch of {lr.shape[0]} LR views")
    out = backend.upscale(lr, render, size, indices)
    if tuple(out.shape[-2:]) != tuple(size):
        raise ValueError(f"back-end {backend.name} returned {tuple(out.shape)}, expected size {tuple(size)}")
    return color_fix(out, lr) if apply_color_fix else out.clamp(0.0, 1.0)
