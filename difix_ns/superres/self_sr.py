"""The `self` SR back-end: internal learning in the spirit of ZSSR (Shocher, Cohen, Irani, "Zero-Shot
Super-Resolution using Deep Internal Learning", CVPR 2018), with this project's NAFNet and fixer trainer.

The scene's own LR training views, downscaled by `scale_step` (2) and bicubic-upsampled back, are the network
inputs; the LR views are the targets. The network therefore learns to undo the loss of detail of one x2 bicubic
round trip at this scene's statistics, and is applied one scale up in stages, ZSSR's gradual SR: x4 = bicubic x2,
network, bicubic x2, network. (One x4 step learnt on views 4x smaller than the LR ones does not transfer: measured
on the super-resolution benchmark's scenes it lost 2.5-3 dB to bicubic at HR; the x2 stages gain.) Each stage
adds `strength` times the network's residual; the strength is chosen on the LR views themselves (downscaled by the
factor, upscaled in stages, scored against the LR views) and saved beside the network (`self_sr.json`).

With the current HR render of a view (3DSR's conditioning), the render, downscaled to the last stage's input size,
replaces the earlier stages: the last stage then sharpens a 3D-consistent image with exactly the degradation it
learnt (a bicubic round trip), rather than the render's own blur. The target mixes that render path with the
per-frame one (`render_weight`), much as 3DSR's posterior step mixes the encoded render with the sampler's own
latent. The default weight is 0, per-frame SR: measured, the render's path gains on a synthetic scene and loses on
both real captures (see `SelfSuperResConfig.render_weight`). No pretrained weights.

Training goes through `difix_ns.training.train_fixer` (pairs written as a curate-style manifest; AdamW, random
crops, time budget, resume); the network is `difix_ns.fixers.nafnet.NAFNet`, zero-initialised at its last conv so
that before training it is the identity (the bicubic baseline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.config import SelfSuperResConfig
from difix_ns.superres.ops import downsample, lr_size, upsample

__all__ = ["STRENGTHS", "SelfBackend", "stage_sizes", "write_self_pairs"]

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Residual strengths the `self` back-end chooses from when `SelfSuperResConfig.strength` is None."""

SETTINGS_FILE = "self_sr.json"
"""Beside the saved network: its scale step and chosen strength (a folder without it: one stage, strength 1)."""


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


def stage_sizes(low: Tuple[int, int], high: Tuple[int, int], step: Optional[int]) -> List[Tuple[int, int]]:
    """Sizes (h, w) of the stages from `low` to `high` (the last is `high`), each at most x`step`, geometrically
    spaced; `step` None: one stage."""
    ratio = max(high[0] / low[0], high[1] / low[1])
    count = 1 if step is None or ratio <= step else math.ceil(math.log(ratio) / math.log(step) - 1e-9)
    sizes = [(round(low[0] * (high[0] / low[0]) ** (k / count)), round(low[1] * (high[1] / low[1]) ** (k / count)))
             for k in range(1, count)]  # fmt: skip
    return sizes + [tuple(high)]


class SelfBackend(SuperResBackend):
    """NAFNet trained on the scene's own LR views (see module docstring)."""

    name = "self"

    def __init__(self, config: SelfSuperResConfig) -> None:
        config.validate()
        self.config = config
        self.fixer = None
        self.folder: Optional[Path] = None
        self.scale_step: Optional[int] = config.scale_step
        self.strength: float = 1.0
        # per-frame outputs by (view index, LR size, HR size, strength): a view's LR image is fixed for the run, so
        # every round would remake the same output; emptied when a network is loaded
        self._per_frame: Dict[tuple, Tensor] = {}

    def load(self, folder: Path) -> None:
        """Use the network saved in `folder` (a `NAFNetFixer.save_pretrained` folder) and its `self_sr.json`."""
        from difix_ns.fixers.nafnet import NAFNetFixer

        self.fixer = NAFNetFixer.from_pretrained(folder).eval()
        self.folder = Path(folder)
        settings_file = self.folder / SETTINGS_FILE
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        self.scale_step = settings.get("scale_step")  # a folder from before the stages: one x-factor step
        chosen = settings.get("strength", 1.0)
        self.strength = float(chosen if self.config.strength is None else self.config.strength)
        self._per_frame.clear()

    def _run_stages(self, x: Tensor, sizes: List[Tuple[int, int]], strength: float) -> Tensor:
        for size in sizes:
            x = upsample(x, size)
            if strength > 0:
                x = (x + strength * (self.fixer.fix(x, None) - x)).clamp(0.0, 1.0)
        return x

    @torch.no_grad()
    def _choose_strength(self, lr_views: List[Tensor], factor: int) -> Dict[float, float]:
        """Mean PSNR of each strength of `STRENGTHS`: LR views downscaled by `factor`, upscaled in stages."""
        from difix_ns.metrics import psnr

        values: Dict[float, List[float]] = {strength: [] for strength in STRENGTHS}
        for view in lr_views:
            view = view[None].float()
            h, w = view.shape[-2:]
            small = downsample(view, lr_size(h, w, factor))
            sizes = stage_sizes(tuple(small.shape[-2:]), (h, w), self.scale_step)
            for strength in STRENGTHS:
                values[strength].append(psnr(self._run_stages(small, sizes, strength), view))
        return {strength: float(np.mean(v)) for strength, v in values.items()}

    def prepare(self, lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> None:
        """Train the network on the LR views into `folder/train` (reused when finished there) and load it."""
        from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

        if self.fixer is not None:
            return
        smallest = min(min(v.shape[-2:]) for v in lr_views)
        if smallest // factor < 1:
            raise ValueError(f"the self back-end cannot downscale {smallest} px LR views by factor {factor}")
        c = self.config
        manifest = write_self_pairs(lr_views, min(c.scale_step, factor), Path(folder) / "pairs")
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
        self.scale_step = c.scale_step
        scores = self._choose_strength(lr_views, factor) if c.strength is None else {}
        if scores:
            self.strength = max(STRENGTHS, key=lambda s: (round(scores[s], 4), -s))  # a tie keeps the weaker
        settings = {"scale_step": c.scale_step, "strength": self.strength, "scores": scores}
        (Path(trained) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))

    def _per_frame_path(
        self, lr: Float[Tensor, "B 3 h w"], sizes: List[Tuple[int, int]], indices: Optional[Sequence[int]]
    ) -> Float[Tensor, "B 3 H W"]:
        """The LR views through all stages; cached by training-view index when `indices` name the views."""
        if indices is None:
            return self._run_stages(lr.float(), sizes, self.strength)
        keys = [(int(i), tuple(lr.shape[-2:]), sizes[-1], self.strength) for i in indices]
        missing = [b for b, key in enumerate(keys) if key not in self._per_frame]
        if missing:
            made = self._run_stages(lr[missing].float(), sizes, self.strength)
            for b, image in zip(missing, made):
                self._per_frame[keys[b]] = image.cpu()
        return torch.stack([self._per_frame[key] for key in keys]).to(lr.device)

    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        if self.fixer is None:
            raise RuntimeError("the self SR back-end is not trained yet: call prepare() (or load()) first")
        sizes = stage_sizes(tuple(lr.shape[-2:]), tuple(size), self.scale_step)
        weight = 0.0 if render is None else self.config.render_weight
        per_frame = self._per_frame_path(lr, sizes, indices) if weight < 1.0 else None
        if weight == 0.0:
            return per_frame
        start = downsample(render.float(), sizes[-2] if len(sizes) > 1 else tuple(lr.shape[-2:]))
        rendered = self._run_stages(start, sizes[-1:], self.strength)
        return rendered if per_frame is None else weight * rendered + (1.0 - weight) * per_frame
