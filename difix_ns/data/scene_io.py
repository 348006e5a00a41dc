"""Scene I/O: the one place that reads a dataset's `transforms.json` and writes derived datasets.

Accepted forms: nerfstudio's `transforms.json` (per-dataset or per-frame intrinsics, optional `train_filenames` /
`val_filenames` / `test_filenames`, `ply_file_path`) and instant-ngp's (`camera_angle_x` instead of focal lengths,
`file_path` without its extension). COLMAP folders go through nerfstudio's own parser (`ns-process-data`).

A derived dataset (a sparse split, a leave-out fold) is a folder with symlinks to the source's images (and their
`images_N` copies, masks, depth maps and point cloud) and a transforms.json with an explicit split; it never writes
into the source folder, and every link lies inside the derived folder, so derived datasets of derived datasets work.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SceneViews",
    "default_split",
    "frame_poses",
    "image_file",
    "image_problem",
    "load_transforms",
    "read_training_views",
    "read_transforms",
    "write_derived_dataset",
]

_SPLIT_KEYS = ("train_filenames", "val_filenames", "test_filenames")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def load_transforms(path: Path) -> dict:
    """The JSON object of a transforms.json file with its `frames` list, the frames not checked (the dataset
    validator reports every bad frame at once). ValueError (message without the path) when that fails."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot be read as JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise ValueError('has no "frames" list')
    return meta


def read_transforms(data: Path) -> dict:
    """A dataset's transforms.json (`data` is the folder or the file), checked to have frames with a `file_path`
    and a 4x4 `transform_matrix`."""
    path = Path(data) / "transforms.json" if Path(data).is_dir() else Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data must be a nerfstudio dataset folder (with transforms.json)")
    try:
        meta = load_transforms(path)
    except ValueError as error:
        raise ValueError(f"{path} {error}") from None
    frames = meta["frames"]
    if not frames:
        raise ValueError(f"{path} has no frames")
    for i, frame in enumerate(frames):
        if "file_path" not in frame or np.asarray(frame.get("transform_matrix", [])).shape != (4, 4):
            raise ValueError(f"{path}: frame {i} needs a file_path and a 4x4 transform_matrix")
    return meta


def image_file(root: Path, file_path: str) -> Path:
    """The image a frame names (relative to the dataset folder `root`, or absolute); instant-ngp files may leave
    out the extension."""
    base = Path(root) / file_path
    for candidate in [base] + [base.with_name(base.name + suffix) for suffix in _IMAGE_SUFFIXES]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the image of frame {file_path!r} is missing: no file {base}[.png|.jpg|.jpeg]")


def image_problem(path: Path) -> Optional[str]:
    """Why the image at `path` cannot be used ("missing", "unreadable (...)"), or None when it decodes fully."""
    from PIL import Image

    if not Path(path).is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def default_split(meta: dict) -> Tuple[List[str], List[str]]:
    """(training, evaluation) file_paths as `ns-train` splits them: the explicit `train_filenames` /
    `val_filenames`, else nerfstudio's default (frames sorted by path, 90 % train by index fraction)."""
    names = [str(f["file_path"]) for f in meta["frames"]]
    if "train_filenames" in meta:
        train = [str(name) for name in meta["train_filenames"]]
        evaluation = [str(n) for n in meta.get("val_filenames", meta.get("test_filenames", []))]
        return train, evaluation
    from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

    names = sorted(names)
    i_train, i_eval = get_train_eval_split_fraction(names, 0.9)
    return [names[i] for i in i_train], [names[i] for i in i_eval]


def frame_poses(meta: dict) -> Dict[str, np.ndarray]:
    """Frame name -> 4x4 camera-to-world matrix (float64), keyed by file name and by its stem."""
    poses: Dict[str, np.ndarray] = {}
    for frame in meta["frames"]:
        name = Path(str(frame["file_path"])).name
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        poses.setdefault(name, matrix)
        poses.setdefault(Path(name).stem, matrix)
    return poses


@dataclass
class SceneViews:
    """The training views of a dataset, as transforms.json names them, with the images that cannot be used."""

    root: Path
    """Dataset folder."""
    meta: dict
    """transforms.json without its frames and split lists."""
    frames: Dict[str, dict]
    """file_path -> frame (every frame of the training split, usable or not)."""
    usable: List[str]
    """Training file_paths whose image exists and decodes, in split order."""
    skipped: Dict[str, str]
    """Training file_path -> why it was skipped ("missing", "unreadable (...)")."""


def read_training_views(data: Path) -> SceneViews:
    """Parse transforms.json and check every *training* image (never an evaluation image)."""
    data = Path(data)
    meta = read_transforms(data)
    by_path = {str(f["file_path"]): f for f in meta["frames"]}
    train, _ = default_split(meta)
    unknown = [name for name in train if name not in by_path]
    if unknown:
        raise ValueError(f"train_filenames lists files without a frame in transforms.json: {unknown[:5]}")
    skipped: Dict[str, str] = {}
    for name in train:
        try:
            problem = image_problem(image_file(data, name))
        except FileNotFoundError:
            problem = "missing"
        if problem is not None:
            skipped[name] = problem
    usable = [name for name in train if name not in skipped]
    rest = {k: v for k, v in meta.items() if k not in ("frames", *_SPLIT_KEYS)}
    return SceneViews(root=data, meta=rest, frames={n: by_path[n] for n in train}, usable=usable, skipped=skipped)


# ------------------------------------------------------------------------------------------------ writing


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copy2(src, dst)


def _inside(path: str) -> str:
    """Where a dataset path goes inside a derived dataset: the same relative path (without a leading `./`), and
    absolute paths (datasets that point at images elsewhere) under `external/`, never outside the folder."""
    parts = Path(path).parts
    return str(Path("external", *parts[1:])) if Path(path).is_absolute() else str(Path(*parts))


def _intrinsics_from_angle(meta: dict, first_image: Path) -> dict:
    # instant-ngp / blender style: horizontal field of view instead of focal lengths.
    from PIL import Image

    with Image.open(first_image) as image:
        w, h = image.size
    fl = 0.5 * w / math.tan(0.5 * float(meta["camera_angle_x"]))
    return {"fl_x": fl, "fl_y": fl, "cx": w / 2, "cy": h / 2, "w": w, "h": h}


def _link_frame(root: Path, frame: dict, folder: Path) -> dict:
    """Link one frame's image (its `images_N` copies, mask and depth map too) into `folder`; the frame with the
    paths it has there."""
    name = str(frame["file_path"])
    source = image_file(root, name)
    inside = _inside(name if source.name == Path(name).name else str(Path(name).with_name(source.name)))
    _link(source, folder / inside)
    frame = {**frame, "file_path": inside}
    rel = Path(inside)
    if not Path(name).is_absolute() and len(rel.parts) > 1:
        for factor in (2, 4, 8):
            scaled = Path(f"{rel.parts[0]}_{factor}", *rel.parts[1:])
            if (root / scaled).is_file():
                _link(root / scaled, folder / scaled)
    for key in ("mask_path", "depth_file_path"):  # per-frame side files travel with their image
        side = frame.get(key)
        if side is not None and (root / side).is_file():
            frame[key] = _inside(side)
            _link(root / side, folder / frame[key])
    return frame


def write_derived_dataset(
    root: Path, meta: dict, folder: Path, train: Sequence[str], test: Sequence[str]
) -> Path:
    """A dataset folder holding only the frames `train` + `test` (file_paths of `meta`, the transforms.json of the
    dataset folder `root`): symlinked images and side files, the point cloud, and a transforms.json whose
    `train_filenames` are `train` and `val_filenames`/`test_filenames` are `test`. Returns `folder`."""
    root, folder = Path(root), Path(folder)
    wanted = set(train) | set(test)
    unknown = sorted(wanted - {str(f["file_path"]) for f in meta.get("frames", [])})
    if unknown:
        raise ValueError(f"frames not in the dataset's transforms.json: {unknown[:5]}")
    folder.mkdir(parents=True, exist_ok=True)
    # the source's frame order, which sets the camera indices nerfstudio gives the views
    frames = {str(f["file_path"]): _link_frame(root, f, folder) for f in meta["frames"] if str(f["file_path"]) in wanted}
    names = list(frames)
    derived = {k: v for k, v in meta.items() if k not in ("frames", *_SPLIT_KEYS)}
    if "fl_x" not in derived and "camera_angle_x" in derived and "fl_x" not in frames[names[0]]:
        derived.update(_intrinsics_from_angle(derived, folder / frames[names[0]]["file_path"]))
    ply = derived.get("ply_file_path")
    if ply is not None and (root / ply).is_file():
        derived["ply_file_path"] = _inside(ply)
        _link(root / ply, folder / derived["ply_file_path"])
    else:
        derived.pop("ply_file_path", None)
    derived["frames"] = list(frames.values())
    derived["train_filenames"] = [frames[n]["file_path"] for n in train]
    derived["val_filenames"] = derived["test_filenames"] = [frames[n]["file_path"] for n in test]
    tmp = folder / "transforms.json.tmp"
    tmp.write_text(json.dumps(derived, indent=2) + "\n")
    tmp.replace(folder / "transforms.json")
    return folder
