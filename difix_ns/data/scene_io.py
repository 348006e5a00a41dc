"""Scene I/O: the one place that reads a dataset's `transforms.json` and writes derived datasets.

Accepted forms: nerfstudio's `transforms.json` (per-dataset or per-frame intrinsics, optional `train_filenames` /
`val_filenames` / `test_filenames`, `ply_file_path`) and instant-ngp's (`camera_angle_x` instead of focal lengths,
`file_path` without its extension). COLMAP folders (`sparse/0` + `images/`) go through nerfstudio's own converter
(`colmap_to_json`, what `ns-process-data` runs), written into a folder of ours (`colmap_scene`).

`derive_scene` turns any of these into a dataset folder of ours that every method reads the same way: images
downscaled (`downscale`) and undistorted where the cameras have distortion, as files of the derived folder, with
pinhole intrinsics that match them; unchanged images stay symlinks to the source.

A derived dataset (a sparse split, a leave-out fold) is a folder with symlinks to the source's images (and their
`images_N` copies, masks, depth maps and point cloud) and a transforms.json with an explicit split; it never writes
into the source folder, and every link lies inside the derived folder, so derived datasets of derived datasets work.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "FrameCamera",
    "SceneViews",
    "colmap_scene",
    "default_split",
    "derive_scene",
    "frame_cameras",
    "frame_poses",
    "image_file",
    "image_problem",
    "load_transforms",
    "read_training_views",
    "read_transforms",
    "scene_format",
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


@dataclass(frozen=True)
class FrameCamera:
    """Pose and pinhole intrinsics of one frame as transforms.json states them (distortion left out)."""

    c2w: np.ndarray
    """4x4 camera-to-world matrix (float64, OpenGL camera axes as nerfstudio)."""
    K: np.ndarray
    """3x3 intrinsics in pixels at `size`."""
    size: Tuple[int, int]
    """(H, W) of the camera the intrinsics belong to."""

    def intrinsics_at(self, size: Sequence[int]) -> np.ndarray:
        """The intrinsics for an image of `size` = (H, W) of the same camera (a render at another resolution)."""
        K = self.K.copy()
        K[0] *= size[1] / self.size[1]
        K[1] *= size[0] / self.size[0]
        return K


def frame_cameras(meta: dict) -> Dict[str, FrameCamera]:
    """Frame name -> its `FrameCamera`, keyed by file name and by its stem (like `frame_poses`). The image size
    comes from the frame's or the file's `w`/`h`."""
    cameras: Dict[str, FrameCamera] = {}
    for frame in meta["frames"]:
        width, height = frame.get("w", meta.get("w")), frame.get("h", meta.get("h"))
        if width is None or height is None:
            raise ValueError(f"transforms.json states no image size (w, h) for frame {frame['file_path']!r}")
        K, _ = _frame_intrinsics(meta, frame, (int(width), int(height)))
        camera = FrameCamera(np.asarray(frame["transform_matrix"], dtype=np.float64), K, (int(height), int(width)))
        name = Path(str(frame["file_path"])).name
        cameras.setdefault(name, camera)
        cameras.setdefault(Path(name).stem, camera)
    return cameras


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
    frames = {
        str(f["file_path"]): _link_frame(root, f, folder) for f in meta["frames"] if str(f["file_path"]) in wanted
    }
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


# ------------------------------------------------------------------------------------------------ user scenes

_COLMAP_MODELS = ("sparse/0", "colmap/sparse/0", "sparse")
"""Where a COLMAP model may lie in a dataset folder: `colmap` + `ns-process-data` layouts, then a bare `sparse/`."""
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_STALE_KEYS = ("camera_angle_x", "camera_angle_y", "camera_model", "is_fisheye", "distortion_params", *_DISTORTION_KEYS)


def scene_format(data: Path) -> str:
    """'transforms' (a nerfstudio / instant-ngp transforms.json) or 'colmap' (a COLMAP model + `images/`);
    ValueError naming what a dataset folder needs otherwise."""
    data = Path(data)
    if (data / "transforms.json").is_file() or data.is_file():
        return "transforms"
    if any((data / model / "cameras.bin").is_file() for model in _COLMAP_MODELS):
        if not (data / "images").is_dir():
            raise ValueError(f"{data} has a COLMAP model but no images/ folder next to it")
        return "colmap"
    raise ValueError(
        f"{data} is neither a nerfstudio dataset (transforms.json) nor a COLMAP folder (sparse/0/cameras.bin, "
        "images.bin and images/)"
    )


def colmap_scene(data: Path, folder: Path) -> Tuple[Path, dict]:
    """The COLMAP folder `data` (model in `sparse/0`, `colmap/sparse/0` or `sparse`; images in `images/`) as a
    transforms.json, converted by nerfstudio's `colmap_to_json` (its poses, world orientation and `sparse_pc.ply`,
    as `ns-process-data` makes them) into `folder`, never into `data`. Returns (the root its `./images/...` paths
    are relative to, i.e. `data`; the transforms.json object, whose `ply_file_path` is absolute, in `folder`)."""
    from nerfstudio.process_data.colmap_utils import colmap_to_json

    data, folder = Path(data), Path(folder)
    model = next(data / m for m in _COLMAP_MODELS if (data / m / "cameras.bin").is_file())
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every camera of a multi-camera model
        colmap_to_json(model, folder)  # writes folder/transforms.json and folder/sparse_pc.ply
    meta = load_transforms(folder / "transforms.json")
    meta["ply_file_path"] = str((folder / meta["ply_file_path"]).resolve())
    return data, meta


def _frame_intrinsics(meta: dict, frame: dict, image_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """(3x3 K in nerfstudio's pixel convention, OpenCV distortion k1 k2 p1 p2 k3) of one frame, per-frame values
    over the dataset's, instant-ngp's `camera_angle_x` when there are no focal lengths."""

    def get(key: str, default=None):
        return frame.get(key, meta.get(key, default))

    w, h = image_size
    if get("fl_x") is None:
        if get("camera_angle_x") is None:
            raise ValueError(f"frame {frame['file_path']!r} has neither fl_x nor camera_angle_x")
        fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
        fy = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y"))) if get("camera_angle_y") is not None else fx
    else:
        fx = float(get("fl_x"))
        fy = float(get("fl_y", fx))
    if get("is_fisheye", False) or str(get("camera_model", "")).upper() in ("OPENCV_FISHEYE", "FISHEYE"):
        raise ValueError(f"frame {frame['file_path']!r}: fisheye cameras are not supported by derive_scene")
    if get("distortion_params") is not None:
        k1, k2, k3, k4, p1, p2 = (float(x) for x in get("distortion_params"))
    else:
        k1, k2, k3, k4, p1, p2 = (float(get(k, 0.0)) for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    if k4 != 0.0:
        raise ValueError(f"frame {frame['file_path']!r}: k4 is only used by fisheye models, not supported")
    K = np.array([[fx, 0.0, float(get("cx", w / 2))], [0.0, fy, float(get("cy", h / 2))], [0.0, 0.0, 1.0]])
    return K, np.array([k1, k2, p1, p2, k3])


def _undistort(image: np.ndarray, K: np.ndarray, dist: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The pinhole image (same size) and its K: OpenCV's `alpha=0` camera (every pixel sees the source image), as
    nerfstudio's full-image datamanager undistorts (principal point shifted by 0.5 px for OpenCV's pixel corners),
    without its crop (every view keeps the source's size)."""
    import cv2

    h, w = image.shape[:2]
    K_cv = K.copy()
    K_cv[:2, 2] -= 0.5
    new_K, _ = cv2.getOptimalNewCameraMatrix(K_cv, dist, (w, h), 0)
    map_x, map_y = cv2.initUndistortRectifyMap(K_cv, dist, None, new_K, (w, h), cv2.CV_32FC1)
    # alpha=0 is OpenCV's approximation: the outermost pixel rows may fall just outside, repeat the edge there
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    new_K = np.asarray(new_K, dtype=np.float64).copy()
    new_K[:2, 2] += 0.5
    return out, new_K


def _processed_frame(root: Path, meta: dict, frame: dict, folder: Path, downscale: int) -> dict:
    """One frame's image undistorted (if its camera has distortion) and shrunk `downscale` times (sizes rounded,
    intrinsics scaled by the exact size ratio of each axis), saved as PNG in `folder`; the frame with its new path
    and pinhole intrinsics (`fl_x fl_y cx cy w h`)."""
    from PIL import Image

    name = str(frame["file_path"])
    for key in ("mask_path", "depth_file_path"):
        if frame.get(key) is not None:
            raise ValueError(f"frame {name!r} has a {key}: downscaling or undistorting it is not supported")
    source = image_file(root, name)
    with Image.open(source) as opened:
        image = np.asarray(opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB"))
    h, w = image.shape[:2]
    K, dist = _frame_intrinsics(meta, frame, (w, h))
    if np.any(dist != 0):
        image, K = _undistort(image, K, dist)
    new_w, new_h = max(1, round(w / downscale)), max(1, round(h / downscale))
    if (new_w, new_h) != (w, h):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.LANCZOS))
    sx, sy = new_w / w, new_h / h
    inside = str(Path(_inside(str(Path(name).with_name(source.name)))).with_suffix(".png"))
    (folder / inside).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / inside)
    frame = {k: v for k, v in frame.items() if k not in _STALE_KEYS and k not in _INTRINSIC_KEYS}
    intrinsics = {"fl_x": K[0, 0] * sx, "fl_y": K[1, 1] * sy, "cx": K[0, 2] * sx, "cy": K[1, 2] * sy}
    return {**frame, "file_path": inside, **{k: float(v) for k, v in intrinsics.items()}, "w": new_w, "h": new_h}


def _has_distortion(meta: dict) -> bool:
    for item in [meta, *meta["frames"]]:
        if any(float(item.get(k, 0.0)) != 0.0 for k in _DISTORTION_KEYS):
            return True
        if item.get("distortion_params") is not None and np.any(np.asarray(item["distortion_params"]) != 0):
            return True
    return False


def derive_scene(data: Path, folder: Path, downscale: int = 1) -> Path:
    """The user's scene `data` (a transforms.json dataset or a COLMAP folder) as a dataset folder `folder` that
    every method reads alike, never writing into `data`:

    - COLMAP: converted by nerfstudio's `colmap_to_json` (`colmap_scene`);
    - `downscale` > 1, or cameras with distortion: every image undistorted (OpenCV, as nerfstudio's full-image
      datamanager does) and shrunk to round(W / downscale) x round(H / downscale), saved as PNG in `folder`, with
      per-frame pinhole intrinsics scaled to it (hoisted to the top when all frames share them);
    - otherwise: images symlinked (`write_derived_dataset` with the dataset's own split).
    Explicit `train_filenames` / `val_filenames` / `test_filenames` follow their frames' new paths. Returns
    `folder`, which holds transforms.json (and `sparse_pc.ply` for COLMAP)."""
    data, folder = Path(data), Path(folder)
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    source_dir = (data.parent if data.is_file() else data).resolve()
    if folder.resolve() == source_dir or source_dir in folder.resolve().parents:
        raise ValueError(f"the derived scene {folder} must lie outside the dataset folder {source_dir}")
    if scene_format(data) == "colmap":
        root, meta = colmap_scene(data, folder)
    else:
        root, meta = (data.parent if data.is_file() else data), read_transforms(data)
    ply = meta.pop("ply_file_path", None)
    ply_source = Path(root) / ply if ply is not None and (Path(root) / ply).is_file() else None
    lists = {k: [str(n) for n in meta[k]] for k in _SPLIT_KEYS if k in meta}
    if downscale == 1 and not _has_distortion(meta):
        names = [str(f["file_path"]) for f in meta["frames"]]
        derived = load_transforms(write_derived_dataset(root, meta, folder, names, []) / "transforms.json")
        for key in _SPLIT_KEYS:  # write_derived_dataset wrote an explicit split: the dataset's own (if any) below
            derived.pop(key, None)
        frames = derived["frames"]
    else:
        frames = [_processed_frame(root, meta, f, folder, downscale) for f in meta["frames"]]
        paths = [f["file_path"] for f in frames]
        if len(set(paths)) != len(paths):  # e.g. a.jpg and a.png, both saved as a.png
            clash = sorted({p for p in paths if paths.count(p) > 1})
            raise ValueError(f"frames whose images differ only in their extension would share {clash[:3]}")
        derived = {k: v for k, v in meta.items() if k not in ("frames", *_SPLIT_KEYS, *_STALE_KEYS, *_INTRINSIC_KEYS)}
        derived["camera_model"] = "PINHOLE"
        if all({k: f[k] for k in _INTRINSIC_KEYS} == {k: frames[0][k] for k in _INTRINSIC_KEYS} for f in frames):
            derived.update({k: frames[0][k] for k in _INTRINSIC_KEYS})
            frames = [{k: v for k, v in f.items() if k not in _INTRINSIC_KEYS} for f in frames]
    renamed = {str(old["file_path"]): new["file_path"] for old, new in zip(meta["frames"], frames)}
    derived.update({k: [renamed[n] for n in v] for k, v in lists.items()})
    if ply_source is not None:  # splatfacto's initial points (COLMAP's sparse_pc.ply is already in `folder`)
        inside = ply_source.name if ply_source.resolve().parent == folder.resolve() else _inside(str(ply))
        if (folder / inside).resolve() != ply_source.resolve():
            _link(ply_source, folder / inside)
        derived["ply_file_path"] = inside
    derived["frames"] = frames
    return _write_transforms(folder, derived)


def _write_transforms(folder: Path, meta: dict) -> Path:
    tmp = folder / "transforms.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(folder / "transforms.json")
    return folder
