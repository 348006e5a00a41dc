"""The `self` SR back-end: internal learning in the spirit of ZSSR (Shocher, Cohen, Irani, "Zero-Shot
Super-Resolution using Deep Internal Learning", CVPR 2018), with this project's NAFNet and fixer trainer.

The scene's own LR training views, downscaled once more by the factor and bicubic-upsampled back, are the network
inputs; the LR views are the targets. The network therefore learns to undo exactly the loss of detail of one
x`factor` bicubic round trip at this scene's statistics, and is then applied one scale up: to the current HR render
of each training view (or the bicubic-upsampled LR view before there is a render). No pretrained weights.

Training goes through `difix_ns.training.train_fixer` (pairs written as a curate-style manifest; AdamW, random
crops, time budget, resume); the network is `difix_ns.fixers.nafnet.NAFNet`, zero-initialised at its last conv so
that before training it is the identity (the bicubic baseline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.config import SelfSuperResConfig
from difix_ns.superres.ops import downsample, lr_size, upsample

__all__ = ["SelfBackend", "write_self_pairs"]


def _save_png(image: Float[Tensor, "3 H W"], path: Path) -> None:
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def write_self_pairs(lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> Path:
    """Write (degraded = up(down(LR)), clean = LR) pairs as PNGs and a manifest.jsonl in `folder`; returns it."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, view in enumerate(lr_views):
        h, w = view.shape[-2:]
        small = downsample(view[None].float(), lr_size(h, w, factor))
        degraded = upsample(small, (h, w))[0]
        names = {"degraded": f"images/{i:04d}_in.png", "clean": f"images/{i:04d}_lr.png"}
        _save_png(degraded, folder / names["degraded"])
        _save_png(view.float(), folder / names["clean"])
        records.append({"id": f"self-sr-{i:04d}", **names, "reference": names["degraded"], "height": h, "width": w})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


class SelfBackend(SuperResBackend):
    """NAFNet trained on the scene's own LR views (see module docstring)."""

    name = "self"

    def __init__(self, config: SelfSuperResConfig) -> None:
        config.validate()
        self.config = config
        self.fixer = None
        self.folder: Optional[Path] = None

    def load(self, folder: Path) -> None:
        """Use the network saved in `folder` (a `NAFNetFixer.save_pretrained` folder)."""
        from difix_ns.fixers.nafnet import NAFNetFixer

        self.fixer = NAFNetFixer.from_pretrained(folder).eval()
        self.folder = Path(folder)

    def prepare(self, lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> None:
        """Train the network on the LR views into `folder/train` (reused when finished there) and load it."""
        from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

        if self.fixer is not None:
            return
        smallest = min(min(v.shape[-2:]) for v in lr_views)
        if smallest // factor < 1:
            raise ValueError(f"the self back-end cannot downscale {smallest} px LR views by factor {factor}")
        manifest = write_self_pairs(lr_views, factor, Path(folder) / "pairs")
        c = self.config
        trained = train_fixer(
            TrainFixerConfig(
                manifests=(manifest,),
                out=Path(folder) / "train",
                backend="nafnet",
                nafnet_width=c.width,
                steps=c.steps,
                max_seconds=c.max_seconds,
                batch_size=c.batch_size,
                crop_size=c.crop_size,
                lr=c.lr,
                val_fraction=0.0,
                save_every=c.steps,
                perceptual="off",
                seed=c.seed,
                cpu=not torch.cuda.is_available(),
            )
        )
        self.load(trained)

    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        if self.fixer is None:
            raise RuntimeError("the self SR back-end is not trained yet: call prepare() (or load()) first")
        x = render if render is not None else upsample(lr, size)
        return self.fixer.fix(x.float(), None)
