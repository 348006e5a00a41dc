"""The `difix` SR back-end: the project's single-step Difix fixer (Wu et al., "Difix3D+: Improving 3D
Reconstructions with Single-Step Diffusion Models", CVPR 2025) as a refiner of an HR image that lacks detail.

Each round the fixer cleans the current HR render of the view (it is the 3DGS's upsampling of what it learned,
blurry where the LR views lacked detail), or the bicubic-upsampled LR view before there is a render; the
bicubic-upsampled LR view is its reference image when the checkpoint mixes references (difix_ref). The fixer is
built through the fixer settings (`difix_ns.fixers.config.FixerConfig`), so checkpoints, offline handling and
errors are those of `--pipeline.model.fixer.*` of the other methods. No per-view state: nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

from jaxtyping import Float
from torch import Tensor

from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.config import DifixSuperResConfig
from difix_ns.superres.ops import upsample

__all__ = ["DifixBackend"]


class DifixBackend(SuperResBackend):
    """The Difix fixer applied to the HR render (see module docstring)."""

    name = "difix"

    def __init__(self, config: DifixSuperResConfig) -> None:
        config.validate()
        self.config = config
        self.fixer: Any = None

    def prepare(self, lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> None:
        """Load the Difix checkpoint (settings errors name `superres.difix.checkpoint`)."""
        from difix_ns.fixers.config import FixerConfig, FixerSettingsError

        if self.fixer is not None:
            return
        c = self.config
        settings = FixerConfig(
            backend="difix", checkpoint=c.checkpoint, cache_dir=c.cache_dir, device=c.device,
            precision=c.precision, timestep=c.timestep, chunk_size=1,
        )  # fmt: skip
        try:
            settings.check()
            self.fixer = settings.setup()
        except (FixerSettingsError, FileNotFoundError) as err:  # a missing folder or hub id: name our setting
            raise FixerSettingsError(f"superres.difix.checkpoint: {err}") from None

    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        if self.fixer is None:
            raise RuntimeError("the difix SR back-end has no fixer yet: call prepare() first")
        bicubic = upsample(lr.float(), size)
        x = bicubic if render is None else render.float()
        # only reference checkpoints use a reference; the others would warn that it is ignored
        refs = bicubic[:, None] if self.config.reference and self.fixer.supports_refs else None
        return self.fixer.fix(x, refs)
