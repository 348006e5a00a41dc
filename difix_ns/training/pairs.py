"""Fixer training data: (degraded, clean, reference) triplets from `difix-ns curate` manifests, random crops; with
their depth-warped reference views and masks for fixers that take them."""

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


def _load_mask(path: str) -> Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("L")) >= 128
    return torch.from_numpy(array.astype(np.float32))[None]


def _load_warped(record: dict, count: int, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """The record's first `count` warped views [K,3,H,W] and masks [K,1,H,W]; missing ones see nothing (zeros)."""
    rgb, mask = torch.zeros(count, 3, *size), torch.zeros(count, 1, *size)
    views, masks = record.get("warped") or [], record.get("warped_mask") or []
    if len(views) != len(masks):
        raise ValueError(f"triplet {record.get('id')}: {len(views)} warped views but {len(masks)} warped masks")
    for k, (view, view_mask) in enumerate(zip(views[:count], masks[:count])):
        rgb[k], mask[k] = _load_rgb(view), _load_mask(view_mask)
        if rgb[k].shape[-2:] != size or mask[k].shape[-2:] != size:
            raise ValueError(f"triplet {record.get('id')}: warped view {view} is not {size[0]}x{size[1]}")
    return rgb, mask


class PairDataset(Dataset):
    """Triplets as tensors: `degraded`, `clean` [3,h,w] and `reference` [1,3,h,w], in [0, 1]; with
    `warped_references` K > 0 also `warped` [K,3,h,w] and `warped_mask` [K,1,h,w] (1 where valid).

    Args:
        records: manifest records (absolute paths, see `load_pairs`).
        crop_size: random square crop (the same window in all three images); None = full images. Images smaller
            than the crop are reflect-padded (replicate where too small to reflect).
        augment: random horizontal flips (training only).
        cache: keep decoded images in memory; None = only when the manifest's sizes say they fit in
            `cache_limit_gb` (paper-scale sets of ~80k pairs are read from disk each time).
        warped_references: K depth-warped reference views per item (the record's first K; a record with fewer,
            or none as in older manifests, gets views that see nothing: zeros with mask 0). Cropped and flipped
            with the same window as the other images.
    """

    def __init__(
        self,
        records: List[dict],
        crop_size: Optional[int] = None,
        augment: bool = False,
        cache: Optional[bool] = None,
        cache_limit_gb: float = 2.0,
        warped_references: int = 0,
    ) -> None:
        if warped_references < 0:
            raise ValueError(f"warped_references must be >= 0, got {warped_references}")
        self.records = list(records)
        self.warped_references = warped_references
        self.crop_size = crop_size
        self.augment = augment
        if cache is None:
            channels = 3 * 3 + 4 * warped_references
            nbytes = sum(channels * 4 * int(r.get("height", 1024)) * int(r.get("width", 1024)) for r in self.records)
            cache = nbytes <= cache_limit_gb * 2**30
        self._cache: Optional[Dict[int, Tuple[Tensor, ...]]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def _images(self, index: int) -> Tuple[Tensor, ...]:
        """degraded, clean, reference (and warped, warped_mask with warped references)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        r = self.records[index]
        images: Tuple[Tensor, ...] = (_load_rgb(r["degraded"]), _load_rgb(r["clean"]), _load_rgb(r["reference"]))
        if images[0].shape != images[1].shape:
            raise ValueError(
                f"triplet {r.get('id')}: degraded {tuple(images[0].shape)} != clean {tuple(images[1].shape)}"
            )
        if self.warped_references:
            images += _load_warped(r, self.warped_references, tuple(images[1].shape[-2:]))
        if self._cache is not None:
            self._cache[index] = images
        return images

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        degraded, clean, reference, *warped = self._images(index)
        if reference.shape != clean.shape:
            reference = F.interpolate(reference[None], size=clean.shape[-2:], mode="bilinear", antialias=True)[0]
        k = self.warped_references
        # every image along the channels: one crop window and one flip for all of them
        parts = [degraded, clean, reference, *(t.flatten(0, 1) for t in warped)]
        stack = torch.cat(parts)  # [9 + 3K + K, H, W]
        if self.crop_size is not None:
            stack = _random_crop(stack[None], self.crop_size)[0]
        if self.augment and torch.rand(()) < 0.5:
            stack = stack.flip(-1)
        item = {"degraded": stack[0:3], "clean": stack[3:6], "reference": stack[6:9][None]}
        if k:
            item["warped"] = stack[9 : 9 + 3 * k].unflatten(0, (k, 3))
            item["warped_mask"] = stack[9 + 3 * k :].unflatten(0, (k, 1))
        return item


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
