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

__all__ = [
    "COVIS_ESTIMATE_NOTE",
    "DISTANCE_BINS",
    "Split",
    "choose_split",
    "estimate_split_covisibility",
    "write_split_dataset",
]

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
            raise ValueError(
                f"train_every must be >= 2 (every view training leaves nothing to evaluate), got {train_every}"
            )
        train_idx, rule = list(range(0, len(names), train_every)), f"every {train_every}-th view"
    elif train_views is not None:
        if not min_train <= train_views < len(names):
            raise ValueError(
                f"train_views must be in [{min_train}, {len(names) - 1}] for {len(names)} views, got {train_views}"
            )
        train_idx, rule = _spread(train_views, len(names)), f"{train_views} views spread along the trajectory"
    elif meta.get("train_filenames"):
        wanted = {Path(p).as_posix() for p in meta["train_filenames"]}
        train_idx, rule = (
            [i for i, n in enumerate(names) if Path(n).as_posix() in wanted],
            "the dataset's train_filenames",
        )
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


COVIS_ESTIMATE_NOTE = (
    "co-visibility masks of this real scene are an estimate: z-depth rendered by a splatfacto trained briefly on "
    "every view of the scene (geometry only; the masks are the same for every method), warped with "
    "difix_ns.geometry.covisibility_mask; pixels whose render has accumulation < 0.5 count as unseen"
)
"""What the estimated masks are (kept in results.json and results.md)."""


def estimate_split_covisibility(
    scene: Path, meta: dict, split: Split, split_folder: Path, work: Path, iterations: int = 500, min_alpha: float = 0.5
) -> dict:
    """Estimated co-visibility masks of the split's evaluation views (DyCheck's masks, for real scenes without
    exact geometry), written to `split_folder/covis/<name>.png` as `difix-ns synth` writes exact ones.

    A splatfacto (difix-splatfacto with the fixer off, the benchmark's `splatfacto` recipe) is trained through
    `ns-train` for `iterations` steps on *every* view of the scene `scene` (transforms.json `meta`) in `work`; it
    only supplies geometry, the same for every method (DyCheck's masks likewise use the evaluation images). Its
    z-depth of every view (`depth`, gsplat's expected depth; pixels with accumulation < `min_alpha` count as no
    surface) goes into `difix_ns.geometry.covisibility_mask` with the split's training views as references.
    Returns {"estimated": True, "note", "iterations", "train_seconds", "mask_seconds", "seconds", "coverage"
    (mean fraction of co-visible pixels), "train"}; a rerun with the same training views and budget reuses the
    masks (`work/covis.json`), a finished geometry run is reused too."""
    import time

    from difix_ns.data.scene_io import write_derived_dataset

    work, split_folder = Path(work), Path(split_folder)
    record = work / "covis.json"
    masks = [split_folder / "covis" / f"{Path(name).stem}.png" for name in split.eval]
    if record.is_file() and all(path.is_file() for path in masks):
        kept = json.loads(record.read_text())
        if kept.get("train") == list(split.train) and kept.get("iterations") == iterations:
            return kept
    if iterations < 1:
        raise ValueError(f"the geometry model needs iterations >= 1, got {iterations}")
    start = time.perf_counter()
    every = [str(f["file_path"]) for f in meta["frames"]]
    geometry_data = write_derived_dataset(scene, meta, work / "data", every, split.eval)
    trained = _train_geometry(geometry_data, work, iterations)
    trained_at = time.perf_counter()
    depth, c2w, K = _render_depths(trained, min_alpha)
    coverage = _write_masks(split, depth, c2w, K, split_folder / "covis")
    end = time.perf_counter()
    result = {
        "estimated": True,
        "note": COVIS_ESTIMATE_NOTE,
        "iterations": iterations,
        "train_seconds": trained_at - start,
        "mask_seconds": end - trained_at,
        "seconds": end - start,
        "coverage": coverage,
        "train": list(split.train),
    }
    record.write_text(json.dumps(result, indent=1))
    return result


def _train_geometry(data: Path, work: Path, iterations: int) -> Path:
    """config.yml of the geometry splatfacto (the benchmark's `splatfacto` recipe and budget)."""
    from difix_ns.benchmark.methods import METHODS, budget_args
    from difix_ns.runner import run_ns_train

    recipe, experiment = METHODS["splatfacto"], f"geometry_{iterations}"
    config = work / experiment / recipe.method / "run" / "config.yml"
    if config.is_file() and any((config.parent / "nerfstudio_models").glob(f"step-{iterations - 1:09d}.ckpt")):
        return config  # finished earlier (same views, same budget)
    args = budget_args(recipe, iterations, cpu=not torch.cuda.is_available()) + list(recipe.args)
    return run_ns_train(recipe.method, data, work, experiment, args, echo=False).config_path


@torch.no_grad()
def _render_depths(config: Path, min_alpha: float):
    """file name -> z-depth [H, W] (0 where accumulation < min_alpha), c2w [3, 4], K [3, 3] of every training
    view of the geometry run, in its own (dataparser) world frame."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(Path(config), test_mode="test")
    pipeline.eval()
    dataset = pipeline.datamanager.train_dataset
    cameras = dataset.cameras.to(pipeline.device)
    depth, c2w, K = {}, {}, {}
    for i, filename in enumerate(dataset.image_filenames):
        outputs = pipeline.model.get_outputs_for_camera(cameras[i : i + 1])
        z = outputs["depth"][..., 0].float().cpu()
        depth[Path(filename).name] = torch.where(
            outputs["accumulation"][..., 0].cpu() >= min_alpha, z, torch.zeros_like(z)
        )
        c2w[Path(filename).name] = cameras.camera_to_worlds[i].float().cpu()
        K[Path(filename).name] = cameras.get_intrinsics_matrices()[i].float().cpu()
    return depth, c2w, K


def _write_masks(split: Split, depth, c2w, K, folder: Path) -> float:
    """The masks as 8-bit PNGs (255 co-visible); the mean co-visible fraction."""
    import numpy as np
    from PIL import Image

    from difix_ns.geometry.warp import covisibility_mask

    train = [Path(n).name for n in split.train]
    train_depth = torch.stack([depth[n] for n in train])
    train_c2w, train_K = torch.stack([c2w[n] for n in train]), torch.stack([K[n] for n in train])
    folder.mkdir(parents=True, exist_ok=True)
    fractions = []
    for name in split.eval:
        key = Path(name).name
        mask = covisibility_mask(depth[key], c2w[key], K[key], train_depth, train_c2w, train_K)
        Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(folder / f"{Path(name).stem}.png")
        fractions.append(float(mask.float().mean()))
    return float(np.mean(fractions))
