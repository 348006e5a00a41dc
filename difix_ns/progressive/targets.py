"""Target cameras of the progressive update: evaluation poses, a viewer camera path, or an interpolated path.

Only camera parameters are read here, never images: evaluation *poses* as targets is the paper's protocol, the
evaluation images stay unseen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from difix_ns.progressive.poses import interpolate_poses

__all__ = ["interpolated_training_path", "load_camera_path", "make_cameras", "subsample", "with_poses"]


def make_cameras(
    camera_to_worlds: Float[Tensor, "N 3 4"],
    fx: Float[Tensor, "N 1"],
    fy: Float[Tensor, "N 1"],
    cx: Float[Tensor, "N 1"],
    cy: Float[Tensor, "N 1"],
    width: Tensor,
    height: Tensor,
) -> Cameras:
    """Pinhole cameras (no distortion, no metadata) from plain tensors, on the CPU."""
    return Cameras(
        camera_to_worlds=camera_to_worlds[:, :3, :4].float().cpu(),
        fx=fx.reshape(-1, 1).float().cpu(),
        fy=fy.reshape(-1, 1).float().cpu(),
        cx=cx.reshape(-1, 1).float().cpu(),
        cy=cy.reshape(-1, 1).float().cpu(),
        width=width.reshape(-1, 1).long().cpu(),
        height=height.reshape(-1, 1).long().cpu(),
        camera_type=CameraType.PERSPECTIVE,
    )


def with_poses(cameras: Cameras, camera_to_worlds: Float[Tensor, "N 3 4"]) -> Cameras:
    """The same intrinsics and image sizes with other poses (a new pinhole `Cameras`, CPU)."""
    return make_cameras(
        camera_to_worlds, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height
    )


def subsample(cameras: Cameras, max_views: int) -> Cameras:
    """At most `max_views` cameras, evenly spread along the sequence (all of them when max_views <= 0)."""
    n = cameras.shape[0]
    if max_views <= 0 or n <= max_views:
        return cameras
    index = torch.linspace(0, n - 1, max_views).round().long()
    return cameras[index]


def _path_error(path: Path, what: str) -> ValueError:
    return ValueError(
        f"camera path {path}: {what}. Expected the JSON that the viewer's render panel exports "
        '("Generate command" / "Save camera path"): {"render_height": H, "render_width": W, '
        '"camera_path": [{"camera_to_world": [16 numbers], "fov": degrees, "aspect": W/H}, ...]}'
    )


def _check_camera_path(path: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise _path_error(path, f"top level is a {type(data).__name__}, not an object")
    for key in ("render_height", "render_width"):
        value = data.get(key)
        if not isinstance(value, (int, float)) or value < 1:
            raise _path_error(path, f"{key} must be a positive number, got {value!r}")
    frames = data.get("camera_path")
    if not isinstance(frames, list) or not frames:
        raise _path_error(path, "it has no cameras (camera_path is missing or empty)")
    for i, frame in enumerate(frames):
        c2w = frame.get("camera_to_world") if isinstance(frame, dict) else None
        if not isinstance(c2w, list) or len(c2w) != 16 or not all(isinstance(v, (int, float)) for v in c2w):
            raise _path_error(path, f"camera_path[{i}].camera_to_world must be a list of 16 numbers, got {c2w!r}")
        fov = frame.get("fov")
        if not isinstance(fov, (int, float)) or not 0 < fov < 180:
            raise _path_error(path, f"camera_path[{i}].fov must be in (0, 180) degrees, got {fov!r}")
    if data.get("camera_type", "perspective") != "perspective":
        raise _path_error(path, f"only perspective paths are supported, got camera_type {data['camera_type']!r}")


def load_camera_path(path: Path, height: int) -> Cameras:
    """Cameras of a viewer camera-path JSON, resized so that their images are `height` pixels high.

    The path's poses are in nerfstudio's world frame (what `ns-render camera-path` uses). Raises `ValueError`
    naming the problem for a missing, empty or malformed file.
    """
    from nerfstudio.cameras.camera_paths import get_path_from_json

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"camera path {path} does not exist (progressive.targets='path' needs camera_path)")
    text = path.read_text()
    if not text.strip():
        raise _path_error(path, "the file is empty")
    try:
        data: Dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as err:
        raise _path_error(path, f"not valid JSON ({err})") from err
    _check_camera_path(path, data)
    cameras = get_path_from_json(data)
    cameras.rescale_output_resolution(height / float(data["render_height"]))
    return with_poses(cameras, cameras.camera_to_worlds)


def interpolated_training_path(training: Cameras, per_segment: int) -> Cameras:
    """`per_segment` poses evenly between each pair of consecutive training cameras (index order).

    Intrinsics and image size are those of the first camera of each pair.
    """
    if per_segment < 1:
        raise ValueError(f"per_segment must be >= 1, got {per_segment}")
    n = training.shape[0]
    if n < 2:
        raise ValueError(f"an interpolated path needs at least 2 training cameras, got {n}")
    first = torch.arange(n - 1).repeat_interleave(per_segment)
    t = torch.arange(1, per_segment + 1, dtype=torch.float32).repeat(n - 1) / (per_segment + 1)
    c2w = training.camera_to_worlds.cpu()
    poses = interpolate_poses(c2w[first], c2w[first + 1], t)
    base = training[first.to(training.device)]
    return make_cameras(poses, base.fx, base.fy, base.cx, base.cy, base.width, base.height)
