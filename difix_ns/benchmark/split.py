"""Sparse-view split of a nerfstudio dataset, and evaluation views binned by distance to the training cameras.

The split is written as a derived dataset folder whose transforms.json lists `train_filenames` (the sparse
training views) and `val_filenames`/`test_filenames` (every other view), with absolute paths to the original
images, so `ns-train` reads it with the stock `nerfstudio-data` dataparser and nothing is copied.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from difix_ns.progressive.poses import camera_spacing, nearest_views

__all__ = ["DISTANCE_BINS", "Split", "choose_split", "read_frames", "write_split_dataset"]

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


def read_frames(data: Path) -> dict:
    """The dataset's transforms.json, checked to have frames with a file_path and a 4x4 transform_matrix."""
    path = Path(data) / "transforms.json" if Path(data).is_dir() else Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data must be a nerfstudio dataset folder (with transforms.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path} has no frames")
    for i, frame in enumerate(frames):
        if "file_path" not in frame or np.asarray(frame.get("transform_matrix", [])).shape != (4, 4):
            raise ValueError(f"{path}: frame {i} needs a file_path and a 4x4 transform_matrix")
    return meta


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


def _image_file(data: Path, file_path: str) -> Path:
    """The image a frame names; instant-ngp / blender files may leave out the extension."""
    for candidate in [data / file_path] + [data / f"{file_path}{ext}" for ext in (".png", ".jpg", ".jpeg")]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the image of frame {file_path!r} is missing: no file {data / file_path}[.png|.jpg|.jpeg]")


def _intrinsics_from_angle(meta: dict, data: Path) -> dict:
    # instant-ngp / blender style: horizontal field of view instead of focal lengths.
    from PIL import Image

    w, h = Image.open(_image_file(data, meta["frames"][0]["file_path"])).size
    fl = 0.5 * w / math.tan(0.5 * float(meta["camera_angle_x"]))
    return {"fl_x": fl, "fl_y": fl, "cx": w / 2, "cy": h / 2, "w": w, "h": h}


def write_split_dataset(data: Path, meta: dict, split: Split, out: Path) -> Path:
    """Write `out/transforms.json` (the source's, with absolute paths and this split); returns `out`."""
    data, out = Path(data).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    derived = dict(meta)
    if "fl_x" not in derived and "camera_angle_x" in derived and "fl_x" not in meta["frames"][0]:
        derived.update(_intrinsics_from_angle(meta, data))
    absolute = {f["file_path"]: str(_image_file(data, f["file_path"]).resolve()) for f in meta["frames"]}
    derived["frames"] = [{**f, "file_path": absolute[f["file_path"]]} for f in meta["frames"]]
    derived["train_filenames"] = [absolute[n] for n in split.train]
    derived["val_filenames"] = derived["test_filenames"] = [absolute[n] for n in split.eval]
    if "ply_file_path" in meta:
        derived["ply_file_path"] = str(data / meta["ply_file_path"])
    (out / "transforms.json").write_text(json.dumps(derived, indent=1))
    (out / "split.json").write_text(json.dumps(split.to_dict(), indent=1))
    return out
