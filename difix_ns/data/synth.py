"""Procedural, textured synthetic scenes written as nerfstudio datasets (`difix-ns synth`).

A scene is a few textured objects (spheres, boxes, cylinders) on a checkered ground plane inside a patterned
background sphere, ray cast analytically (`difix_ns.data.synth_render`). Cameras orbit the scene centre: a
sparse training trajectory over a limited arc, and a held-out evaluation trajectory with poses interpolated
between training views plus poses far from every training view (outside the arc, other elevations).

Written to `out/`:

- `images/train_XXX.png`, `images/eval_XXX.png`: ground-truth renders (square, `resolution` pixels).
- `transforms.json`: nerfstudio format (OPENCV pinhole intrinsics at the top level, camera-to-world OpenGL
  `transform_matrix` per frame), with an explicit split (`train_filenames`; eval frames in both
  `val_filenames` and `test_filenames`) and `ply_file_path`.
- `sparse_pc.ply`: initial point cloud (like COLMAP sparse points): noisy surface points seen by the
  training views, with their colours (binary PLY, float xyz + uchar rgb).
- `synth_meta.json`: seed, options, scene description, and per eval frame the distance to its nearest
  training view and a near/far label.
- `depths/<image name>.npy`: exact depth of every view (float32 [H, W]): the **z-depth** (distance from the camera
  plane along its viewing axis, as `difix_ns.geometry.warp` takes it) of the first surface hit by each pixel-centre
  ray, in the world units of `transforms.json` (before nerfstudio's dataparser rescales the scene).
- `covis/<image name>.png`: co-visibility mask of every eval view (8-bit, 255 where at least one training view sees
  the pixel-centre surface point, else 0), computed exactly from the analytic surfaces (in front, inside the
  training image, first hit along the ray from the training camera: `synth_render.covisible_pixels`). Masked
  metrics (DyCheck's mPSNR/mSSIM) read them. They hold for this split's training views; a derived split with
  other training views gets its own with `write_split_covisibility`.

Same seed and options give byte-identical files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from jaxtyping import Float

from difix_ns.data.synth_render import (
    Intrinsics,
    SceneObject,
    SynthScene,
    covisible_pixels,
    pixel_rays,
    render_view,
    shade_rays,
    view_depth,
)

__all__ = [
    "SynthConfig",
    "build_cameras",
    "build_scene",
    "make_synthetic_scene",
    "write_split_covisibility",
]

_ORBIT_RADIUS = 4.0
_LOOK_AT = np.array([0.0, 0.0, 0.35])
_TRAIN_ELEVATION_DEG = 25.0
_PLACEMENT_RADIUS = 1.8
_POINT_NOISE = 0.015
_NOISE_LATTICE = 32
_IMAGE_GLOBS = ("train_*.png", "eval_*.png")
_DEPTH_FOLDER, _COVIS_FOLDER = "depths", "covis"
_DERIVED_GLOBS = ((_DEPTH_FOLDER, ("train_*.npy", "eval_*.npy")), (_COVIS_FOLDER, ("eval_*.png",)))
_OUTPUT_FILES = ("transforms.json", "sparse_pc.ply", "synth_meta.json")


@dataclass(frozen=True)
class SynthConfig:
    """Write a procedural textured scene as a nerfstudio dataset (sparse train views, near and far eval views)."""

    out: Path = Path("data/synth")
    """Output folder (created if missing; must be empty unless --overwrite)."""
    seed: int = 0
    """Random seed: object layout, textures, colours, light and camera jitter. Same seed, same bytes."""
    resolution: int = 96
    """Width and height of the square images in pixels (16..2048)."""
    num_train_views: int = 8
    """Number of training views, spread over the training arc (3..64)."""
    num_eval_views: int = 12
    """Number of held-out views (2..128): half interpolated between training views, half far from all of them."""
    num_objects: int = 5
    """Number of textured objects on the ground (1..20)."""
    train_arc_deg: float = 120.0
    """Azimuth range covered by the training views in degrees (20..150; the rest of the circle holds far eval views)."""
    fov_deg: float = 50.0
    """Horizontal and vertical field of view in degrees (20..120)."""
    supersample: int = 2
    """Rays per pixel along each axis for anti-aliasing (1..4; 2 means 4 rays per pixel)."""
    num_points: int = 4000
    """Number of points in the initial point cloud `sparse_pc.ply` (100..200000)."""
    overwrite: bool = False
    """Allow writing into a non-empty output folder (replaces this command's own files there)."""

    def validate(self) -> None:
        """Raise ValueError naming the first option outside its allowed range."""
        _check_int("resolution", self.resolution, 16, 2048)
        _check_int("num_train_views", self.num_train_views, 3, 64)
        _check_int("num_eval_views", self.num_eval_views, 2, 128)
        _check_int("num_objects", self.num_objects, 1, 20)
        _check_int("supersample", self.supersample, 1, 4)
        _check_int("num_points", self.num_points, 100, 200_000)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_float("train_arc_deg", self.train_arc_deg, 20.0, 150.0)
        _check_float("fov_deg", self.fov_deg, 20.0, 120.0)
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out={str(out)!r} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise ValueError(
                f"out={str(out)!r} is not empty; pass overwrite=True (--overwrite) to write into it anyway"
            )

    def main(self) -> None:
        """Write the dataset and report where it went."""
        from rich.console import Console

        console = Console()
        start = time.perf_counter()
        try:
            out = make_synthetic_scene(self)
        except ValueError as err:
            console.print(f"[bold red]difix-ns synth: {err}")
            raise SystemExit(2) from err
        console.print(f"[bold green]Wrote synthetic scene to[/] [cyan]{out}")
        console.print(
            f"{self.num_train_views} train + {self.num_eval_views} eval views, {self.resolution}x{self.resolution} px, "
            f"seed {self.seed}, {time.perf_counter() - start:.2f} s"
        )
        console.print(f"Train with: ns-train <method> --data {out} nerfstudio-data")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_float(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a number in {low}..{high}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# Scene


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def _color_pair(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    hue = float(rng.uniform())
    a = _hsv_to_rgb(hue, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.75, 0.95)))
    hue_b = (hue + float(rng.uniform(0.25, 0.75))) % 1.0
    b = _hsv_to_rgb(hue_b, float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.2, 0.55)))
    return a, b


def _place_objects(rng: np.random.Generator, num_objects: int) -> List[Tuple[float, float, float]]:
    """Non-overlapping (x, y, footprint radius) triples inside the placement disc."""
    scale = min(1.0, math.sqrt(6.0 / num_objects))
    for _ in range(50):
        placed: List[Tuple[float, float, float]] = []
        for _ in range(num_objects):
            radius = float(rng.uniform(0.25, 0.45)) * scale
            for _ in range(500):
                r = _PLACEMENT_RADIUS * math.sqrt(float(rng.uniform())) * 0.999
                phi = float(rng.uniform(0, 2 * math.pi))
                x, y = r * math.cos(phi), r * math.sin(phi)
                if math.hypot(x, y) + radius > _PLACEMENT_RADIUS + 0.3:
                    continue
                if all(math.hypot(x - px, y - py) > radius + pr + 0.08 for px, py, pr in placed):
                    placed.append((x, y, radius))
                    break
            else:
                break
        if len(placed) == num_objects:
            return placed
        scale *= 0.9
    raise RuntimeError(f"could not place {num_objects} objects")  # unreachable for num_objects <= 20


def _make_object(rng: np.random.Generator, x: float, y: float, radius: float) -> SceneObject:
    kind = ("sphere", "box", "cylinder")[int(rng.integers(3))]
    yaw = float(rng.uniform(0, math.pi))
    if kind == "sphere":
        center, size = (x, y, radius), (radius, radius, radius)
        texture = ("checker", "stripes")[int(rng.integers(2))]  # two-tone: the colour at a point is exact
    elif kind == "box":
        hx = radius / math.sqrt(2) * float(rng.uniform(0.8, 1.0))
        hy = radius / math.sqrt(2) * float(rng.uniform(0.7, 1.0))
        hz = radius * float(rng.uniform(0.6, 1.3))
        center, size = (x, y, hz), (hx, hy, hz)
        texture = ("checker", "stripes", "noise")[int(rng.integers(3))]
    else:
        height = radius * float(rng.uniform(1.5, 3.0))
        center, size = (x, y, 0.0), (radius, radius, height)
        texture = ("checker", "stripes", "noise")[int(rng.integers(3))]
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    color_a, color_b = _color_pair(rng)
    return SceneObject(
        kind=kind,
        center=tuple(float(c) for c in center),
        size=tuple(float(s) for s in size),
        yaw=yaw,
        texture=texture,
        color_a=color_a,
        color_b=color_b,
        frequency=float(rng.uniform(5.0, 9.0)),
        stripe_axis=tuple(float(a) for a in axis),
    )


def build_scene(config: SynthConfig) -> SynthScene:
    """The procedural scene of `config.seed` and `config.num_objects` (no validation, no files)."""
    rng = np.random.default_rng([config.seed, 0])
    objects = [_make_object(rng, x, y, r) for x, y, r in _place_objects(rng, config.num_objects)]
    light_az = float(rng.uniform(0, 2 * math.pi))
    light_el = math.radians(float(rng.uniform(40.0, 65.0)))
    light = (math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az), math.sin(light_el))
    ground = (
        _hsv_to_rgb(float(rng.uniform()), float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.7, 0.9))),
        _hsv_to_rgb(float(rng.uniform()), float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.25, 0.45))),
    )
    sky_hue = float(rng.uniform(0.5, 0.7))
    sky = (
        _hsv_to_rgb((sky_hue + 0.5) % 1.0, 0.25, 0.95),
        _hsv_to_rgb(sky_hue, float(rng.uniform(0.4, 0.7)), float(rng.uniform(0.6, 0.85))),
    )
    return SynthScene(
        objects=objects,
        light_dir=light,
        ambient=0.35,
        ground_colors=ground,
        ground_cell=float(rng.uniform(0.22, 0.32)),
        sky_colors=sky,
        sky_segments=int(rng.integers(18, 30)),
        background_radius=12.0,
        noise_lattice=rng.uniform(size=(_NOISE_LATTICE,) * 3),
    )


# ----------------------------------------------------------------------------------------------------------------
# Cameras


def _look_at(position: np.ndarray, target: np.ndarray) -> Float[np.ndarray, "4 4"]:
    """Camera-to-world (OpenGL: looks down -z, y up) at `position` looking at `target`, world z up."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def _orbit_pose(azimuth_deg: float, elevation_deg: float, radius: float) -> Float[np.ndarray, "4 4"]:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    position = _LOOK_AT + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return _look_at(position, _LOOK_AT)


def build_cameras(config: SynthConfig) -> Tuple[List[Dict], List[Dict]]:
    """Training and evaluation camera lists: dicts with `c2w` (4x4), `azimuth_deg`, `elevation_deg`, `radius`,
    and for eval views `role` ("interpolated" between two training views or "extrapolated" far from them)."""
    rng = np.random.default_rng([config.seed, 1])
    n_train = config.num_train_views
    arc = float(config.train_arc_deg)
    start_az = float(rng.uniform(0.0, 360.0))
    train = []
    for i in range(n_train):
        az = start_az + arc * i / (n_train - 1) + float(rng.uniform(-0.1, 0.1)) * arc / (n_train - 1)
        el = _TRAIN_ELEVATION_DEG + float(rng.uniform(-3.0, 3.0))
        radius = _ORBIT_RADIUS * float(rng.uniform(0.97, 1.03))
        train.append({"azimuth_deg": az, "elevation_deg": el, "radius": radius})

    n_near = config.num_eval_views // 2
    n_far = config.num_eval_views - n_near
    evals = []
    gaps = n_train - 1
    per_gap = [sum(1 for j in range(n_near) if int((j + 0.5) * gaps / n_near) == g) for g in range(gaps)]
    for g, count in enumerate(per_gap):
        for q in range(count):
            f = (q + 1) / (count + 1)
            a, b = train[g], train[g + 1]
            view = {key: a[key] * (1 - f) + b[key] * f for key in ("azimuth_deg", "elevation_deg", "radius")}
            evals.append({**view, "role": "interpolated"})

    margin = max(30.0, min(arc / gaps, 60.0))
    lo, hi = start_az + arc + margin, start_az + 360.0 - margin
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for k in range(n_far):
        frac = (0.5 + k * golden) % 1.0
        # Low first: lower cameras sit further out horizontally, so the opposite view is the farthest one.
        el = _TRAIN_ELEVATION_DEG - 17.0 if k % 2 == 0 else _TRAIN_ELEVATION_DEG + 30.0
        evals.append(
            {"azimuth_deg": lo + (hi - lo) * frac, "elevation_deg": el, "radius": _ORBIT_RADIUS, "role": "extrapolated"}
        )
    for view in train + evals:
        view["azimuth_deg"] = view["azimuth_deg"] % 360.0
        view["c2w"] = _orbit_pose(view["azimuth_deg"], view["elevation_deg"], view["radius"])
    return train, evals


def _nearest(c2w: np.ndarray, candidates: List[np.ndarray], skip: int = -1) -> Tuple[int, float, float]:
    """(index, translation, rotation angle) of the candidate pose nearest to `c2w` (translation + angle)."""
    from difix_ns.progressive.poses import pose_distance_parts

    translation, angle = pose_distance_parts(np.asarray([c2w]), np.asarray(candidates))
    total = translation[0] + angle[0]
    if skip >= 0:
        total[skip] = math.inf
    index = int(total.argmin())
    return index, float(translation[0, index]), float(angle[0, index])


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _intrinsics(config: SynthConfig) -> Intrinsics:
    focal = config.resolution / 2.0 / math.tan(math.radians(config.fov_deg) / 2.0)
    half = config.resolution / 2.0
    return Intrinsics(fx=focal, fy=focal, cx=half, cy=half, width=config.resolution, height=config.resolution)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _sample_points(
    config: SynthConfig, scene: SynthScene, train: List[Dict], intrinsics: Intrinsics
) -> Tuple[Float[np.ndarray, "N 3"], np.ndarray]:
    """Noisy surface points seen by random pixels of the training views, with their rendered colours."""
    rng = np.random.default_rng([config.seed, 2])
    per_view = np.full(len(train), config.num_points // len(train))
    per_view[: config.num_points % len(train)] += 1
    xyz, rgb = [], []
    for view, count in zip(train, per_view):
        u = rng.uniform(0, intrinsics.width, size=count)
        v = rng.uniform(0, intrinsics.height, size=count)
        origins, dirs = pixel_rays(view["c2w"][:3], intrinsics, u, v)
        colors, points, _ = shade_rays(scene, origins, dirs)
        distance = np.linalg.norm(points - origins, axis=1, keepdims=True)
        noise = rng.normal(scale=_POINT_NOISE, size=points.shape) * distance / _ORBIT_RADIUS
        xyz.append(points + noise)
        rgb.append(_to_uint8(colors))
    return np.concatenate(xyz).astype(np.float32), np.concatenate(rgb)


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    record = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
    data = np.empty(len(xyz), dtype=record)
    data["xyz"], data["rgb"] = xyz, rgb
    path.write_bytes(header.encode("ascii") + data.tobytes())


def _prepare_out(out: Path) -> Path:
    for folder, patterns in (("images", _IMAGE_GLOBS), *_DERIVED_GLOBS):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for pattern in patterns:
            for stale in sorted((out / folder).glob(pattern)):
                stale.unlink()
    for name in _OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    return out


def _matrix(c2w: np.ndarray) -> List[List[float]]:
    return [[float(x) for x in row] for row in c2w]


def make_synthetic_scene(config: SynthConfig) -> Path:
    """Validate `config`, render the scene and write the dataset; returns the output folder."""
    from PIL import Image

    config.validate()
    out = _prepare_out(Path(config.out))
    scene = build_scene(config)
    train, evals = build_cameras(config)
    intr = _intrinsics(config)

    frames = []
    for prefix, views in (("train", train), ("eval", evals)):
        for i, view in enumerate(views):
            view["file_path"] = f"images/{prefix}_{i:03d}.png"
            image = render_view(scene, view["c2w"][:3], intr, config.supersample)
            Image.fromarray(_to_uint8(image)).save(out / view["file_path"], format="PNG")
            frames.append({"file_path": view["file_path"], "transform_matrix": _matrix(view["c2w"])})
    _write_geometry(out, scene, train, evals, intr)

    xyz, rgb = _sample_points(config, scene, train, intr)
    _write_ply(out / "sparse_pc.ply", xyz, rgb)

    train_names = [v["file_path"] for v in train]
    eval_names = [v["file_path"] for v in evals]
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": intr.fx,
        "fl_y": intr.fy,
        "cx": intr.cx,
        "cy": intr.cy,
        "w": intr.width,
        "h": intr.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
        "train_filenames": train_names,
        "val_filenames": eval_names,
        "test_filenames": eval_names,
        "ply_file_path": "sparse_pc.ply",
    }
    (out / "transforms.json").write_text(json.dumps(transforms, indent=2) + "\n")
    (out / "synth_meta.json").write_text(json.dumps(_meta(config, scene, train, evals), indent=2) + "\n")
    return out


def _write_geometry(out: Path, scene: SynthScene, train: List[Dict], evals: List[Dict], intr: Intrinsics) -> None:
    """`depths/<name>.npy` of every view and `covis/<name>.png` of every eval view (see the module docstring)."""
    train_poses = [view["c2w"][:3] for view in train]
    for view in train + evals:
        stem = Path(view["file_path"]).stem
        depth, _ = view_depth(scene, view["c2w"][:3], intr)
        np.save(out / _DEPTH_FOLDER / f"{stem}.npy", depth.astype(np.float32))
    for view in evals:
        mask = covisible_pixels(scene, view["c2w"][:3], train_poses, intr)
        _save_mask(out / _COVIS_FOLDER / f"{Path(view['file_path']).stem}.png", mask)


def _save_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_split_covisibility(scene_dir: Path, train: Sequence[str], evals: Sequence[str], out: Path) -> List[Path]:
    """Exact co-visibility masks of the views `evals` as seen from the views `train` (file_paths in the
    transforms.json of the synthetic scene `scene_dir`, rebuilt from its synth_meta.json) written to
    `out/covis/<name>.png`, for a derived split whose training views are not the scene's own. Returns the files."""
    scene_dir, out = Path(scene_dir), Path(out)
    config = SynthConfig(**json.loads((scene_dir / "synth_meta.json").read_text())["options"])
    from difix_ns.data.scene_io import read_transforms

    frames = read_transforms(scene_dir)["frames"]
    poses = {str(f["file_path"]): np.asarray(f["transform_matrix"], dtype=np.float64)[:3] for f in frames}
    unknown = sorted((set(train) | set(evals)) - set(poses))
    if unknown:
        raise ValueError(f"frames not in {scene_dir / 'transforms.json'}: {unknown[:5]}")
    scene, intr = build_scene(config), _intrinsics(config)
    (out / _COVIS_FOLDER).mkdir(parents=True, exist_ok=True)
    written = []
    for name in evals:
        path = out / _COVIS_FOLDER / f"{Path(name).stem}.png"
        _save_mask(path, covisible_pixels(scene, poses[name], [poses[t] for t in train], intr))
        written.append(path)
    return written


def _meta(config: SynthConfig, scene: SynthScene, train: List[Dict], evals: List[Dict]) -> Dict:
    train_poses = [v["c2w"] for v in train]
    spacing = []
    for i, pose in enumerate(train_poses):
        _, t, r = _nearest(pose, train_poses, skip=i)
        spacing.append(t + r)
    threshold = max(spacing)
    eval_entries = []
    for view in evals:
        idx, t, r = _nearest(view["c2w"], train_poses)
        eval_entries.append(
            {
                "file_path": view["file_path"],
                "role": view["role"],
                "nearest_train": train[idx]["file_path"],
                "translation": t,
                "rotation_deg": math.degrees(r),
                "distance": t + r,
                "label": "near" if t + r <= threshold else "far",
            }
        )
    options = {k: v for k, v in asdict(config).items() if k not in ("out", "overwrite")}
    orbit = ("file_path", "azimuth_deg", "elevation_deg", "radius")
    return {
        "seed": config.seed,
        "options": options,
        "world": "z up, ground plane z=0, cameras look at " + str([float(x) for x in _LOOK_AT]),
        "distance_definition": "translation (world units) + rotation angle (radians) to the nearest training "
        "pose; label 'far' when larger than the largest nearest-neighbour distance among training poses",
        "train_nn_spacing_max": threshold,
        "train": [{k: view[k] for k in orbit} for view in train],
        "eval": [{**{k: view[k] for k in orbit}, **entry} for view, entry in zip(evals, eval_entries)],
        "scene": scene.to_dict(),
    }
