"""Fixer training data: (degraded, clean, reference) triplets from `difix-ns curate` manifests, random crops."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["PairDataset", "load_pairs", "split_pairs"]


def load_pairs(manifests: Sequence[Path]) -> List[dict]:
    """All triplets of the given manifest.jsonl files (paths made absolute); raises ValueError when empty."""
    from difix_ns.data.curate import read_manifest

    records: List[dict] = []
    for manifest in manifests:
        if not Path(manifest).is_file():
            raise ValueError(f"manifest {str(manifest)!r} not found (make one with `difix-ns curate`)")
        records += read_manifest(Path(manifest))
    if not records:
        raise ValueError(f"the manifests {[str(m) for m in manifests]} hold no triplets")
    return records


def split_pairs(records: List[dict], val_fraction: float) -> Tuple[List[dict], List[dict]]:
    """Deterministic train/validation split by a hash of each triplet's id (stable when manifests grow).

    At least one validation triplet when there are 2 or more; none when val_fraction is 0."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")

    def score(r: dict) -> float:
        key = r.get("id", r["degraded"]).encode()
        return int(hashlib.sha1(key).hexdigest()[:8], 16) / 0xFFFFFFFF

    ranked = sorted(records, key=score)
    n_val = 0 if val_fraction == 0 or len(records) < 2 else max(1, int(round(val_fraction * len(records))))
    val_ids = {id(r) for r in ranked[:n_val]}
    return [r for r in records if id(r) not in val_ids], [r for r in records if id(r) in val_ids]


def _load_rgb(path: str) -> Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class PairDataset(Dataset):
    """Triplets as tensors: `degraded`, `clean` [3,h,w] and `reference` [1,3,h,w], in [0, 1].

    Args:
        records: manifest records (absolute paths, see `load_pairs`).
        crop_size: random square crop (the same window in all three images); None = full images. Images smaller
            than the crop are reflect-padded (replicate where too small to reflect).
        augment: random horizontal flips (training only).
        cache: keep decoded images in memory; None = only when the manifest's sizes say they fit in
            `cache_limit_gb` (paper-scale sets of ~80k pairs are read from disk each time).
    """

    def __init__(
        self,
        records: List[dict],
        crop_size: Optional[int] = None,
        augment: bool = False,
        cache: Optional[bool] = None,
        cache_limit_gb: float = 2.0,
    ) -> None:
        self.records = list(records)
        self.crop_size = crop_size
        self.augment = augment
        if cache is None:
            nbytes = sum(3 * 3 * 4 * int(r.get("height", 1024)) * int(r.get("width", 1024)) for r in self.records)
            cache = nbytes <= cache_limit_gb * 2**30
        self._cache: Optional[Dict[int, Tuple[Tensor, Tensor, Tensor]]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def _images(self, index: int) -> Tuple[Tensor, Tensor, Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        r = self.records[index]
        images = (_load_rgb(r["degraded"]), _load_rgb(r["clean"]), _load_rgb(r["reference"]))
        if images[0].shape != images[1].shape:
            raise ValueError(f"triplet {r.get('id')}: degraded {tuple(images[0].shape)} != clean {tuple(images[1].shape)}")
        if self._cache is not None:
            self._cache[index] = images
        return images

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        degraded, clean, reference = self._images(index)
        if reference.shape != clean.shape:
            reference = F.interpolate(reference[None], size=clean.shape[-2:], mode="bilinear", antialias=True)[0]
        stack = torch.stack([degraded, clean, reference])  # [3 images, 3, H, W]
        if self.crop_size is not None:
            stack = _random_crop(stack, self.crop_size)
        if self.augment and torch.rand(()) < 0.5:
            stack = stack.flip(-1)
        return {"degraded": stack[0], "clean": stack[1], "reference": stack[2:3]}


def _random_crop(stack: Tensor, size: int) -> Tensor:
    h, w = stack.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        stack = F.pad(stack, (0, pw, 0, ph), mode=mode)
        h, w = stack.shape[-2:]
    top = int(torch.randint(0, h - size + 1, ()))
    left = int(torch.randint(0, w - size + 1, ()))
    return stack[..., top : top + size, left : left + size]
