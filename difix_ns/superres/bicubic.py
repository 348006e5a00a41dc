"""The `bicubic` SR back-end: bicubic upsampling of the LR view (the reference baseline; ignores the render)."""

from __future__ import annotations

from typing import Optional, Sequence

from jaxtyping import Float
from torch import Tensor

from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.ops import upsample

__all__ = ["BicubicBackend"]


class BicubicBackend(SuperResBackend):
    """Bicubic upsampling of the LR view to HR."""

    name = "bicubic"

    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        return upsample(lr, size)
