"""Validate a dataset before training: every problem of its images, cameras and splits at once, with file names.

The checks run on nerfstudio's own data parser output (`DataparserOutputs`: image and mask file names, cameras),
so they hold for every format nerfstudio reads (nerfstudio and instant-ngp `transforms.json`, COLMAP, ...):

- a split with no images; a camera count that differs from the image count;
- a missing image or mask file; a file Pillow cannot identify; a truncated or corrupt file: a PNG's chunks are
  read to IEND with their CRCs, a JPEG is decoded at 1/8 scale (every byte is still read and entropy-decoded),
  other formats are fully decoded; Pillow's `ImageFile.LOAD_TRUNCATED_IMAGES` is forced off while checking, so
  a cut-off file is found whatever the process has set;
- an image whose size differs from its camera's width and height;
- channels nerfstudio cannot use: it reads images as 8-bit L, RGB or RGBA (`InputDataset.get_numpy_image`); a
  palette, 1-bit, 16-bit, float, two-channel (LA) or CMYK image would be misread or fail; masks must have one
  channel;
- a camera pose with NaN/inf, or whose rotation is not orthonormal with determinant +1;
- intrinsics that are NaN/inf or not positive (fx, fy, width, height), or NaN/inf (cx, cy, distortion).

For `transforms.json` datasets (nerfstudio and instant-ngp parsers) the file itself is read too: nerfstudio's
auto-orientation averages all poses, so one NaN pose turns every parsed pose into NaN; the raw frames name the
bad one. `train_filenames` (and val/test) entries that name no frame are reported there as well.

`validate_dataparser_outputs` checks parser outputs; `validate_dataset` parses a folder with nerfstudio's parser
and checks it (for commands that start from a folder); both raise `DatasetError` (a `ValueError`) listing every
problem. Images are checked by a few threads (Pillow decodes outside the GIL), with a progress bar for large
datasets.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from difix_ns.data.scene_io import load_transforms
from difix_ns.errors import UserError

if TYPE_CHECKING:
    from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig, DataparserOutputs

__all__ = [
    "DatasetError",
    "DatasetProblem",
    "IMAGE_MODES",
    "MAX_LISTED",
    "dataset_problems",
    "image_file_problem",
    "transforms_problems",
    "validate_dataparser_outputs",
    "validate_dataset",
]

IMAGE_MODES = ("L", "RGB", "RGBA")
"""Pillow modes nerfstudio reads correctly (8-bit grey, RGB, RGBA)."""
MAX_LISTED = 20
"""Problems listed in a `DatasetError` message; the rest are counted."""
POSE_TOLERANCE = 1e-3
"""Largest |R^T R - I| entry and |det R - 1| accepted for a camera rotation."""
PROGRESS_MIN_FILES = 200
"""Files from which the image check shows a progress bar."""

_MODE_HINTS = {
    "P": "palette image (mode P): nerfstudio would read its palette indices as grey levels",
    "PA": "palette image with alpha (mode PA): nerfstudio would read its palette indices",
    "1": "1-bit image (mode 1): nerfstudio would read it as values 0 and 1 (black)",
    "LA": "2-channel image (grey + alpha, mode LA): nerfstudio needs 1, 3 or 4 channels",
    "La": "2-channel image (mode La): nerfstudio needs 1, 3 or 4 channels",
    "CMYK": "CMYK image: nerfstudio would read its 4 channels as RGBA",
    "YCbCr": "YCbCr image: nerfstudio would read it as RGB",
    "LAB": "LAB image: nerfstudio would read it as RGB",
    "HSV": "HSV image: nerfstudio would read it as RGB",
    "F": "32-bit float image (mode F): nerfstudio reads 8-bit images only",
    "I": "32-bit integer image (mode I): nerfstudio reads 8-bit images only",
}


@dataclass(frozen=True)
class DatasetProblem:
    """One problem of a dataset: where (a file name relative to the dataset folder, a frame, a split) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


class DatasetError(UserError):
    """A dataset that cannot be trained on; `problems` holds every problem found, the message lists them."""

    def __init__(self, problems: Sequence[DatasetProblem], source: str = "the dataset") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(_format_problems(self.problems, source))

    def __reduce__(self):  # pickles (e.g. across worker processes) with its problems
        return type(self), (self.problems, self.source)


def _format_problems(problems: Sequence[DatasetProblem], source: str) -> str:
    count = len(problems)
    lines = [f"{count} problem{'s' if count != 1 else ''} in {source} (checked before training; nothing was loaded):"]
    lines += [f"  - {problem}" for problem in problems[:MAX_LISTED]]
    if count > MAX_LISTED:
        lines.append(f"  ... and {count - MAX_LISTED} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Image files


@dataclass(frozen=True)
class _FileReport:
    """What one file holds: its size and mode, or why it cannot be read."""

    size: Optional[Tuple[int, int]] = None
    mode: Optional[str] = None
    bands: int = 0
    error: Optional[str] = None


@contextmanager
def _strict_loading() -> Iterator[None]:
    """Pillow raises on truncated files while inside (its LOAD_TRUNCATED_IMAGES may be set by other code)."""
    from PIL import ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _inspect_file(path: Path) -> _FileReport:
    """Header first (existence, format, size, mode), then the whole file (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        return _FileReport(error="file not found")
    if not path.is_file():
        return _FileReport(error="not a file")
    try:
        with Image.open(path) as image:
            size, mode, fmt, bands = image.size, image.mode, image.format, len(image.getbands())
            if fmt == "PNG":
                # Every chunk up to IEND with its CRC: finds a cut or damaged byte anywhere (also where the pixel
                # decode would not notice), without inflating the pixels.
                image.verify()
            else:
                if fmt == "JPEG":  # 1/8-scale decode: reads and entropy-decodes every byte, skips the IDCT
                    image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
    except UnidentifiedImageError:
        return _FileReport(error="not an image file Pillow can read")
    except (OSError, SyntaxError, ValueError) as err:
        return _FileReport(error=f"truncated or corrupt image ({err})")
    except Exception as err:  # a decoder bug on a malformed file is still a problem of that file
        return _FileReport(error=f"unreadable image ({type(err).__name__}: {err})")
    return _FileReport(size=size, mode=mode, bands=bands)


def _inspect_files(paths: Sequence[Path], progress: Optional[bool]) -> Dict[Path, _FileReport]:
    show = len(paths) >= PROGRESS_MIN_FILES if progress is None else progress
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with _strict_loading(), ThreadPoolExecutor(max_workers=workers) as pool:
        reports = pool.map(_inspect_file, paths)
        if show:
            from rich.progress import track

            reports = track(reports, total=len(paths), description="Checking images", transient=True)
        return dict(zip(paths, reports))


def _mode_problem(mode: str) -> Optional[str]:
    if mode in IMAGE_MODES:
        return None
    if mode.startswith("I;16") or mode.startswith("I;"):
        return f"16-bit image (mode {mode}): nerfstudio reads 8-bit images only"
    return _MODE_HINTS.get(mode, f"image mode {mode}: nerfstudio reads 8-bit L, RGB or RGBA images only")


def image_file_problem(path: Union[str, Path], size: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """Why the image at `path` cannot be trained on (missing, unreadable, truncated, unusable mode, not `size` =
    (width, height)), or None. The same check as `dataset_problems`, for one file."""
    with _strict_loading():
        report = _inspect_file(Path(path))
    problems = _file_problems(Path(path), "image", size, report, None)
    return "; ".join(problem.what for problem in problems) or None


# ----------------------------------------------------------------------------------------------------------------
# Cameras


def _camera_problems(cameras, names: Sequence[str], check_poses: bool) -> List[DatasetProblem]:
    """Non-finite or non-rigid poses and bad intrinsics, one problem per camera and kind."""
    import torch

    count = len(names)
    c2w = cameras.camera_to_worlds[:count].double()
    problems: List[List[str]] = [[] for _ in range(count)]
    if check_poses:
        finite = torch.isfinite(c2w).flatten(1).all(dim=1)
        rotation = torch.where(finite[:, None, None], c2w[:, :, :3], torch.eye(3, dtype=c2w.dtype))
        gram = rotation.transpose(1, 2) @ rotation - torch.eye(3, dtype=c2w.dtype)
        orthonormal_error = gram.abs().flatten(1).amax(dim=1)
        det = torch.linalg.det(rotation)
        for i in range(count):
            if not finite[i]:
                problems[i].append("camera pose has NaN or inf values")
            elif orthonormal_error[i] > POSE_TOLERANCE or abs(float(det[i]) - 1.0) > POSE_TOLERANCE:
                problems[i].append(
                    f"camera pose is not rigid (rotation part off orthonormal by {float(orthonormal_error[i]):.3g}, "
                    f"determinant {float(det[i]):.4g}; expected a rotation with determinant +1)"
                )
    for name in ("fx", "fy", "cx", "cy", "width", "height"):
        values = getattr(cameras, name).reshape(-1)[:count].double()
        bad = ~torch.isfinite(values)
        if name in ("fx", "fy", "width", "height"):
            bad |= values <= 0
        for i in torch.nonzero(bad).flatten():
            value = float(values[i])
            kind = "not finite" if not math.isfinite(value) else "not positive"
            problems[int(i)].append(f"camera {name} = {value:g} is {kind}")
    if cameras.distortion_params is not None:
        distortion = cameras.distortion_params.reshape(-1, cameras.distortion_params.shape[-1])[:count]
        for i in torch.nonzero(~torch.isfinite(distortion).all(dim=1)).flatten():
            problems[int(i)].append("camera distortion parameters have NaN or inf values")
    return [DatasetProblem(names[i], what) for i in range(count) for what in problems[i]]


# ----------------------------------------------------------------------------------------------------------------
# Parser outputs


def _display_name(path: Path, root: Optional[Path]) -> str:
    """`path` relative to `root` where it lies under it, else as given."""
    if root is not None:
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def dataset_problems(
    splits: Mapping[str, "DataparserOutputs"],
    root: Optional[Union[str, Path]] = None,
    check_poses: bool = True,
    progress: Optional[bool] = None,
) -> List[DatasetProblem]:
    """Every problem of the parser outputs of `splits` (split name -> `DataparserOutputs`), in a stable order.

    Args:
        splits: nerfstudio data parser outputs per split (e.g. {"train": ..., "val": ...}).
        root: files are named relative to this folder (the dataset folder) where they lie under it.
        check_poses: check camera poses (off when the raw poses were checked and already found bad).
        progress: show a progress bar while checking images (None: only for large datasets).
    """
    root = None if root is None else Path(root)
    problems: List[DatasetProblem] = []
    expected: List[Tuple[Path, str, Optional[Tuple[int, int]]]] = []  # (file, kind, (width, height))
    for split, outputs in splits.items():
        files = list(outputs.image_filenames)
        if not files:
            problems.append(DatasetProblem(f"{split} split", "has no images"))
            continue
        cameras = outputs.cameras
        names = [_display_name(f, root) for f in files]
        if cameras.camera_to_worlds.ndim != 3 or cameras.camera_to_worlds.shape[1:] != (3, 4):
            shape = "x".join(str(n) for n in cameras.camera_to_worlds.shape)
            problems.append(
                DatasetProblem(
                    f"{split} split",
                    f"the data parser gave camera poses of shape {shape} for {len(files)} images, expected "
                    f"{len(files)}x3x4 (nerfstudio's instant-ngp parser does this for a split of one image)",
                )
            )
            expected += [(Path(f), "image", None) for f in files]
            continue
        num_cameras = int(cameras.camera_to_worlds.shape[0])
        if num_cameras != len(files):
            problems.append(DatasetProblem(f"{split} split", f"{len(files)} images but {num_cameras} cameras"))
        problems += _camera_problems(cameras, names[:num_cameras], check_poses)
        widths = cameras.width.reshape(-1).tolist()
        heights = cameras.height.reshape(-1).tolist()
        masks = list(outputs.mask_filenames) if outputs.mask_filenames is not None else []
        if masks and len(masks) != len(files):
            problems.append(DatasetProblem(f"{split} split", f"{len(files)} images but {len(masks)} masks"))
        for i, f in enumerate(files):
            size = (int(widths[i]), int(heights[i])) if i < num_cameras else None
            expected.append((Path(f), "image", size))
            if i < len(masks):
                expected.append((Path(masks[i]), "mask", size))

    unique = list(dict.fromkeys(path for path, _, _ in expected))
    reports = _inspect_files(unique, progress) if unique else {}
    for path, kind, size in expected:
        problems += _file_problems(path, kind, size, reports[path], root)
    return list(dict.fromkeys(problems))  # a file in two splits is reported once


def _file_problems(
    path: Path, kind: str, size: Optional[Tuple[int, int]], report: _FileReport, root: Optional[Path]
) -> List[DatasetProblem]:
    name = _display_name(path, root)
    label = "" if kind == "image" else "mask "
    if report.error is not None:
        return [DatasetProblem(name, f"{label}{report.error}")]
    problems = []
    assert report.mode is not None and report.size is not None
    if kind == "image":
        mode_problem = _mode_problem(report.mode)
    else:
        mode_problem = None
        if report.bands != 1:
            mode_problem = f"mask has {report.bands} channels (mode {report.mode}); masks need 1"
    if mode_problem is not None:
        problems.append(DatasetProblem(name, mode_problem))
    if size is not None and tuple(report.size) != size:
        problems.append(
            DatasetProblem(
                name,
                f"{label}size {report.size[0]}x{report.size[1]} differs from its camera's {size[0]}x{size[1]} "
                "(width x height)",
            )
        )
    return problems


def validate_dataparser_outputs(
    splits: Mapping[str, "DataparserOutputs"],
    root: Optional[Union[str, Path]] = None,
    check_poses: bool = True,
    progress: Optional[bool] = None,
) -> None:
    """Raise `DatasetError` listing every problem of the parser outputs (see `dataset_problems`)."""
    problems = dataset_problems(splits, root=root, check_poses=check_poses, progress=progress)
    if problems:
        raise DatasetError(problems, source=f"the dataset {root}" if root is not None else "the dataset")


# ----------------------------------------------------------------------------------------------------------------
# transforms.json


def _rigid_problem(matrix) -> Optional[str]:
    import numpy as np

    try:
        c2w = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return "transform_matrix is not a matrix of numbers"
    if c2w.shape not in ((4, 4), (3, 4)):
        return f"transform_matrix has shape {c2w.shape}, expected 4x4"
    if not np.isfinite(c2w).all():
        return "transform_matrix has NaN or inf values"
    rotation = c2w[:3, :3]
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    det = float(np.linalg.det(rotation))
    if error > POSE_TOLERANCE or abs(det - 1.0) > POSE_TOLERANCE:
        return (
            f"transform_matrix is not a rigid pose (rotation part off orthonormal by {error:.3g}, determinant "
            f"{det:.4g}; expected a rotation with determinant +1)"
        )
    if c2w.shape == (4, 4) and not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=POSE_TOLERANCE):
        return f"transform_matrix last row is {c2w[3].tolist()}, expected [0, 0, 0, 1]"
    return None


@dataclass
class _TransformsCheck:
    """What reading a transforms.json found."""

    problems: List[DatasetProblem] = dataclasses.field(default_factory=list)
    parse_blocked: bool = False
    """nerfstudio's parser will fail on these problems (its own error would repeat them)."""
    poses_bad: bool = False
    """A frame pose is bad (parsed poses are then unreliable: auto-orientation averages them)."""
    missing: List[Tuple[str, Path]] = dataclasses.field(default_factory=list)
    """(file_path, file) of frames whose image file does not exist."""


def _transforms_check(path: Path) -> _TransformsCheck:
    name = path.name
    try:
        meta = load_transforms(path)
    except ValueError as err:
        return _TransformsCheck([DatasetProblem(name, str(err))], parse_blocked=True)
    frames = meta["frames"]
    check = _TransformsCheck()
    problems = check.problems
    file_paths = []
    for index, frame in enumerate(frames):
        label = f"{name} frame {index}"
        if not isinstance(frame, dict) or "file_path" not in frame:
            problems.append(DatasetProblem(label, 'has no "file_path"'))
            check.parse_blocked = True
            continue
        file_paths.append(os.path.normpath(str(frame["file_path"])))
        label = str(frame["file_path"])
        if not (path.parent / label).exists():
            check.missing.append((label, path.parent / label))
        if "transform_matrix" not in frame:
            problems.append(DatasetProblem(label, 'frame has no "transform_matrix"'))
            check.parse_blocked = check.poses_bad = True
            continue
        pose_problem = _rigid_problem(frame["transform_matrix"])
        if pose_problem is not None:
            problems.append(DatasetProblem(label, pose_problem))
            check.poses_bad = True
    known = set(file_paths)
    for split in ("train", "val", "test"):
        listed = meta.get(f"{split}_filenames")
        if listed is None:
            continue
        for entry in listed:
            if os.path.normpath(str(entry)) not in known:
                exists = (path.parent / str(entry)).exists()
                problems.append(
                    DatasetProblem(
                        f"{split}_filenames",
                        f"names {entry!r}, which is no frame's file_path"
                        + ("" if exists else " (and no such file exists)"),
                    )
                )
                check.parse_blocked = True
    return check


def transforms_problems(path: Union[str, Path]) -> List[DatasetProblem]:
    """Problems of a `transforms.json` itself: bad or non-rigid frame poses, split lists naming no frame."""
    return _transforms_check(Path(path)).problems


def _transforms_path(config: "DataParserConfig") -> Optional[Path]:
    """The transforms.json a nerfstudio or instant-ngp parser config reads, if any."""
    from nerfstudio.data.dataparsers.instant_ngp_dataparser import InstantNGPDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    if not isinstance(config, (NerfstudioDataParserConfig, InstantNGPDataParserConfig)):
        return None
    data = Path(config.data)
    path = data if data.suffix == ".json" else data / "transforms.json"
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------------
# Folders


def _parse(config: "DataParserConfig", split: str, quiet: bool = True) -> "DataparserOutputs":
    from contextlib import nullcontext

    from nerfstudio.utils.rich_utils import CONSOLE

    # quiet: the parser's notes (e.g. its automatic downscale) are printed where the outputs are used
    with CONSOLE.capture() if quiet else nullcontext():
        return config.setup().get_dataparser_outputs(split=split)


def validate_dataset(
    data_dir: Optional[Union[str, Path]],
    dataparser_config: Optional["DataParserConfig"] = None,
    splits: Sequence[str] = ("train", "val"),
    progress: Optional[bool] = None,
    quiet: bool = True,
) -> Dict[str, "DataparserOutputs"]:
    """Parse a dataset with nerfstudio's data parser and check it; returns the parser outputs per split.

    Args:
        data_dir: the dataset (folder or transforms file); None: `dataparser_config.data`.
        dataparser_config: nerfstudio data parser config (not modified); None: the nerfstudio parser
            (`transforms.json`, as `ns-train ... nerfstudio-data`).
        splits: splits to parse and check ("train" and "val" as `ns-train` uses them; "test" for `ns-eval`).
        progress: progress bar while checking images (None: only for large datasets).
        quiet: hide the parser's own notes (off where its outputs are used, as nerfstudio's data managers do).

    Raises:
        DatasetError: listing every problem found (parser failures included), each with its file name.
    """
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    config = dataparser_config if dataparser_config is not None else NerfstudioDataParserConfig()
    data = Path(data_dir) if data_dir is not None else (Path(config.data) if config.data is not None else None)
    if data is None:
        raise DatasetError([DatasetProblem("data", "no dataset given")])
    config = dataclasses.replace(config, data=data)
    source = f"the dataset {data}"
    if not data.exists():
        raise DatasetError([DatasetProblem(str(data), "does not exist")], source)
    root = data.parent if data.suffix == ".json" else data

    transforms = _transforms_path(config)
    raw = _transforms_check(transforms) if transforms is not None else _TransformsCheck()
    problems = list(raw.problems)

    outputs: Dict[str, DataparserOutputs] = {}
    explained: List[DatasetProblem] = []  # parser failures that a full-resolution parse got past
    for split in splits:
        try:
            outputs[split] = _parse(config, split, quiet)
        except Exception as err:  # reported with the split, next to every other problem
            failure = DatasetProblem(f"{split} split", f"nerfstudio's data parser failed: {_short(err)}")
            retried = _parse_fixed_scale(config, split)
            if retried is not None:
                outputs[split] = retried
                explained.append(failure)
            elif not raw.parse_blocked:
                problems.append(failure)
    problems += dataset_problems(outputs, root=root, check_poses=not raw.poses_bad, progress=progress)
    if not isinstance(config, NerfstudioDataParserConfig):
        # frames whose file is missing and that the parser left out silently (the instant-ngp parser skips them)
        parsed = {Path(f).name for o in outputs.values() for f in o.image_filenames}
        problems += [DatasetProblem(label, "file not found") for label, f in raw.missing if f.name not in parsed]
    problems = list(dict.fromkeys(problems)) or explained
    if problems:
        raise DatasetError(problems, source)
    return outputs


def _parse_fixed_scale(config: "DataParserConfig", split: str) -> Optional["DataparserOutputs"]:
    """Parse again at full resolution when the parser failed choosing its scale from the first image (missing or
    unreadable): the image check then names that file next to every other problem. None if that fails too."""
    if getattr(config, "downscale_factor", 1) is not None:
        return None
    try:
        return _parse(dataclasses.replace(config, downscale_factor=1), split)
    except Exception:  # the first failure is the one reported
        return None


def _short(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    text = text if len(text) <= 500 else text[:500] + " ..."
    return f"{type(err).__name__}: {text}"
