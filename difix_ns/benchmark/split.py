"""Sparse-view split of a nerfstudio dataset, and evaluation views binned by distance to the training cameras.

The split is written as a derived dataset folder (`difix_ns.data.scene_io`: symlinks to the original images) whose
transforms.json lists `train_filenames` (the sparse training views) and `val_filenames`/`test_filenames` (every
other view), so `ns-train` reads it with the stock `nerfstudio-data` dataparser and nothing is copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from difix_ns.progressive.poses import camera_spacing, nearest_views

__all__ = ["DISTANCE_BINS", "Split", "choose_split", "write_split_dataset"]

DISTANCE_BINS = ("near", "mid", "far")
"""Evaluation views by pose distance d to the nearest training view, in units of the training cameras' median
spacing s: near d <= 0.5 s, mid 0.5 s < d <= 1.5 s, far d > 1.5 s."""
_BIN_EDGES = (0.5, 1.5)


@dataclass
class Split:
    """Which views train and which evaluate, with each evaluation view's distance and bin."""

    train: List[str]
    """file_path of the training views, as in the source transforms.json."""
    eval: List[str]
    """file_path of the evaluation views."""
    distance: Dict[str, float]
    """Evaluation view -> pose distance (translation + rotation angle in radians) to the nearest training view."""
    bin: Dict[str, str]
    """Evaluation view -> 'near' | 'mid' | 'far'."""
    spacing: float
    """Median nearest-neighbour pose distance among the training views."""
    rule: str
    """How the training views were chosen."""

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "spacing": self.spacing,
            "train": self.train,
            "eval": [{"file_path": f, "distance": self.distance[f], "bin": self.bin[f]} for f in self.eval],
        }


def _spread(count: int, total: int) -> List[int]:
    return sorted({int(round(i * (total - 1) / max(count - 1, 1))) for i in range(count)})


def choose_split(
    meta: dict, train_every: Optional[int] = None, train_views: Optional[int] = None, min_train: int = 2
) -> Split:
    """Training views: every `train_every`-th frame, or `train_views` frames spread along the trajectory, or (with
    neither) the dataset's own `train_filenames`. Every other frame evaluates."""
    frames = sorted(meta["frames"], key=lambda f: f["file_path"])
    names = [f["file_path"] for f in frames]
    if train_every is not None and train_views is not None:
        raise ValueError("give train_every or train_views, not both")
    if train_every is not None:
        if train_every < 2:
            raise ValueError(f"train_every must be >= 2 (every view training leaves nothing to evaluate), got {train_every}")
        train_idx, rule = list(range(0, len(names), train_every)), f"every {train_every}-th view"
    elif train_views is not None:
        if not min_train <= train_views < len(names):
            raise ValueError(f"train_views must be in [{min_train}, {len(names) - 1}] for {len(names)} views, got {train_views}")
        train_idx, rule = _spread(train_views, len(names)), f"{train_views} views spread along the trajectory"
    elif meta.get("train_filenames"):
        wanted = {Path(p).as_posix() for p in meta["train_filenames"]}
        train_idx, rule = [i for i, n in enumerate(names) if Path(n).as_posix() in wanted], "the dataset's train_filenames"
    else:
        raise ValueError("the dataset has no train_filenames: choose the split with train_every or train_views")
    eval_idx = [i for i in range(len(names)) if i not in set(train_idx)]
    if len(train_idx) < min_train or not eval_idx:
        raise ValueError(
            f"{len(names)} views give {len(train_idx)} training and {len(eval_idx)} evaluation views with {rule}; "
            f"need at least {min_train} and 1"
        )
    poses = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64)[:, :3, :4]
    spacing = camera_spacing(poses[train_idx])
    _, dist = nearest_views(poses[eval_idx], poses[train_idx])
    distance = {names[i]: float(d) for i, d in zip(eval_idx, dist[:, 0])}
    bins = {n: DISTANCE_BINS[sum(d > e * spacing for e in _BIN_EDGES)] for n, d in distance.items()}
    return Split([names[i] for i in train_idx], [names[i] for i in eval_idx], distance, bins, spacing, rule)


def write_split_dataset(data: Path, meta: dict, split: Split, out: Path) -> Path:
    """Write the split as a derived dataset (`difix_ns.data.scene_io.write_derived_dataset`) in `out`, with its
    `split.json`; returns `out`."""
    from difix_ns.data.scene_io import write_derived_dataset

    write_derived_dataset(data, meta, out, split.train, split.eval)
    (Path(out) / "split.json").write_text(json.dumps(split.to_dict(), indent=1))
    return Path(out)
