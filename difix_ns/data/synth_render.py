"""Analytic ray caster for the procedural scenes of `difix_ns.data.synth`.

Vectorized numpy, no dependencies beyond numpy. World frame: z up, ground plane z = 0, scene centred on the
origin, everything enclosed by a large textured background sphere. Cameras follow nerfstudio's convention
(OpenGL: camera-to-world, the camera looks down its -z axis, +y is up, pixel centres at +0.5).

Shading is Lambertian with one directional light and an ambient term (no shadows); the background sphere is
emissive (a sky gradient with a pattern). All textures are solid (3D) textures in each object's local frame, so
the colour of a surface point does not depend on the viewpoint: the scene is exactly multi-view consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple

import numpy as np
from jaxtyping import Bool, Float, Int

__all__ = [
    "VISIBILITY_RTOL",
    "Intrinsics",
    "SceneObject",
    "SynthScene",
    "camera_rays",
    "cast_rays",
    "covisible_pixels",
    "lambert_shade",
    "pixel_rays",
    "render_view",
    "shade_rays",
    "view_depth",
    "visible_from",
]

_EPS = 1e-6

ObjectKind = Literal["sphere", "box", "cylinder"]
TextureKind = Literal["checker", "stripes", "noise"]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (nerfstudio convention: pixel centres at +0.5)."""

    fx: float
    """Focal length along x in pixels."""
    fy: float
    """Focal length along y in pixels."""
    cx: float
    """Principal point x in pixels (width / 2 for a centred camera)."""
    cy: float
    """Principal point y in pixels (height / 2 for a centred camera)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""


@dataclass
class SceneObject:
    """One textured object resting on the ground plane."""

    kind: ObjectKind
    """Primitive type."""
    center: Tuple[float, float, float]
    """Centre of the primitive in world units (spheres and boxes: geometric centre; cylinders: base centre)."""
    size: Tuple[float, float, float]
    """Sphere: (radius, radius, radius); box: half extents (x, y, z) before yaw; cylinder: (radius, radius, height)."""
    yaw: float
    """Rotation about the world z axis in radians (boxes; stored for all kinds, used for the texture frame)."""
    texture: TextureKind
    """Solid texture type."""
    color_a: Tuple[float, float, float]
    """First texture colour, linear RGB in [0, 1]."""
    color_b: Tuple[float, float, float]
    """Second texture colour, linear RGB in [0, 1]."""
    frequency: float
    """Texture frequency in cycles per world unit."""
    stripe_axis: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Unit axis of the stripes (stripes texture only)."""


@dataclass
class SynthScene:
    """Everything needed to render the scene; a plain description, serialisable to JSON via `to_dict`."""

    objects: List[SceneObject]
    """Objects standing on the ground."""
    light_dir: Tuple[float, float, float]
    """Unit vector pointing from the surface towards the (directional) light."""
    ambient: float
    """Ambient light fraction in [0, 1]; diffuse weight is 1 - ambient."""
    ground_colors: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    """The two colours of the ground checker."""
    ground_cell: float
    """Ground checker cell size in world units."""
    sky_colors: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    """Horizon and zenith colours of the background sphere."""
    sky_segments: int
    """Number of azimuthal pattern segments on the background sphere."""
    background_radius: float
    """Radius of the background sphere (centred on the origin)."""
    noise_lattice: Float[np.ndarray, "L L L"] = field(repr=False, default_factory=lambda: np.zeros((1, 1, 1)))
    """Random lattice values in [0, 1] for the value-noise texture (periodic)."""

    def to_dict(self) -> Dict:
        """JSON-friendly description (without the noise lattice, which is derived from the seed)."""
        return {
            "objects": [
                {
                    "kind": o.kind,
                    "center": list(o.center),
                    "size": list(o.size),
                    "yaw": o.yaw,
                    "texture": o.texture,
                    "color_a": list(o.color_a),
                    "color_b": list(o.color_b),
                    "frequency": o.frequency,
                    "stripe_axis": list(o.stripe_axis),
                }
                for o in self.objects
            ],
            "light_dir": list(self.light_dir),
            "ambient": self.ambient,
            "ground_colors": [list(c) for c in self.ground_colors],
            "ground_cell": self.ground_cell,
            "sky_colors": [list(c) for c in self.sky_colors],
            "sky_segments": self.sky_segments,
            "background_radius": self.background_radius,
        }


# ----------------------------------------------------------------------------------------------------------------
# Rays


def camera_rays(
    c2w: Float[np.ndarray, "3 4"], intrinsics: Intrinsics, supersample: int = 1
) -> Tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"]]:
    """World-space rays of a pinhole camera, `supersample**2` per pixel.

    Rays are ordered (row, col, sub_row, sub_col) so that `reshape(H, W, S*S, 3).mean(2)` gives pixels.
    With `supersample == 1` each ray passes through its pixel centre, exactly as nerfstudio's `generate_rays`.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"c2w must have shape (3, 4) or (4, 4), got {c2w.shape}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    s = supersample
    offsets = (np.arange(s) + 0.5) / s
    v = (np.arange(intrinsics.height)[:, None] + offsets[None, :]).reshape(-1)  # (H*S,)
    u = (np.arange(intrinsics.width)[:, None] + offsets[None, :]).reshape(-1)  # (W*S,)
    vv, uu = np.meshgrid(v, u, indexing="ij")  # (H*S, W*S)
    # Reorder to (H, W, S, S) so sub-samples of one pixel are contiguous.
    vv = vv.reshape(intrinsics.height, s, intrinsics.width, s).transpose(0, 2, 1, 3).reshape(-1)
    uu = uu.reshape(intrinsics.height, s, intrinsics.width, s).transpose(0, 2, 1, 3).reshape(-1)
    return pixel_rays(c2w, intrinsics, uu, vv)


def pixel_rays(
    c2w: Float[np.ndarray, "3 4"], intrinsics: Intrinsics, u: Float[np.ndarray, "N"], v: Float[np.ndarray, "N"]
) -> Tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"]]:
    """World-space rays (origins, unit directions) through image positions `(u, v)` (pixel units, x right, y down;
    the centre of pixel (row i, col j) is (j + 0.5, i + 0.5))."""
    c2w = np.asarray(c2w, dtype=np.float64)
    dirs_cam = np.stack(
        [(u - intrinsics.cx) / intrinsics.fx, -(v - intrinsics.cy) / intrinsics.fy, -np.ones_like(u)], axis=-1
    )
    dirs = dirs_cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape).copy()
    return origins, dirs


# ----------------------------------------------------------------------------------------------------------------
# Intersections: each returns (t, normal) with t = inf where missed.


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _hit_sphere(o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    oc = o - center
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - radius**2
    disc = b * b - c
    hit = disc >= 0
    sq = np.sqrt(np.where(hit, disc, 0.0))
    t = -b - sq
    t = np.where(t > _EPS, t, -b + sq)
    t = np.where(hit & (t > _EPS), t, np.inf)
    p = o + d * np.where(np.isfinite(t), t, 0.0)[:, None]
    return t, (p - center) / radius


def _hit_box(
    o: np.ndarray, d: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float
) -> Tuple[np.ndarray, np.ndarray]:
    rot = _yaw_matrix(yaw)
    ol = (o - center) @ rot  # world -> local: R^T x, written as x @ R
    dl = d @ rot
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    t1 = (-half - ol) / dl
    t2 = (half - ol) / dl
    tmin = np.minimum(t1, t2)
    tmax = np.maximum(t1, t2)
    axis = np.argmax(tmin, axis=1)
    tnear = tmin[np.arange(len(o)), axis]
    tfar = tmax.min(axis=1)
    hit = (tnear <= tfar) & (tnear > _EPS)
    t = np.where(hit, tnear, np.inf)
    n_local = np.zeros_like(o)
    n_local[np.arange(len(o)), axis] = -np.sign(dl[np.arange(len(o)), axis])
    return t, n_local @ rot.T


def _hit_cylinder(
    o: np.ndarray, d: np.ndarray, base: np.ndarray, radius: float, height: float
) -> Tuple[np.ndarray, np.ndarray]:
    ol = o - base
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (ol[:, 0] * d[:, 0] + ol[:, 1] * d[:, 1])
    c = ol[:, 0] ** 2 + ol[:, 1] ** 2 - radius**2
    a_safe = np.where(a < 1e-12, 1e-12, a)
    disc = b * b - 4 * a_safe * c
    ok = disc >= 0
    t_side = (-b - np.sqrt(np.where(ok, disc, 0.0))) / (2 * a_safe)
    z_side = ol[:, 2] + t_side * d[:, 2]
    t_side = np.where(ok & (t_side > _EPS) & (z_side >= 0) & (z_side <= height), t_side, np.inf)
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    t_cap = (height - ol[:, 2]) / dz
    pc = ol + d * t_cap[:, None]
    t_cap = np.where((t_cap > _EPS) & (pc[:, 0] ** 2 + pc[:, 1] ** 2 <= radius**2), t_cap, np.inf)
    use_cap = t_cap < t_side
    t = np.where(use_cap, t_cap, t_side)
    p = ol + d * np.where(np.isfinite(t), t, 0.0)[:, None]
    n_side = np.stack([p[:, 0] / radius, p[:, 1] / radius, np.zeros_like(t)], axis=1)
    n_cap = np.broadcast_to(np.array([0.0, 0.0, 1.0]), n_side.shape)
    return t, np.where(use_cap[:, None], n_cap, n_side)


def _hit_ground(o: np.ndarray, d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    dz = np.where(np.abs(d[:, 2]) < 1e-12, -1e-12, d[:, 2])
    t = -o[:, 2] / dz
    t = np.where((t > _EPS) & (d[:, 2] < 0), t, np.inf)
    return t, np.broadcast_to(np.array([0.0, 0.0, 1.0]), o.shape)


def _hit_background(o: np.ndarray, d: np.ndarray, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    b = np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - radius**2
    t = -b + np.sqrt(np.maximum(b * b - c, 0.0))
    p = o + d * t[:, None]
    return t, -p / radius


def cast_rays(
    scene: SynthScene, origins: Float[np.ndarray, "N 3"], dirs: Float[np.ndarray, "N 3"]
) -> Tuple[Float[np.ndarray, "N"], Float[np.ndarray, "N 3"], Int[np.ndarray, "N"]]:
    """Nearest hit of each ray: (t, unit normal, surface id).

    Surface ids: `-1` background sphere, `0` ground plane, `k >= 1` object `k - 1`.
    Origins must lie inside the background sphere (every ray then hits something).
    """
    if origins.shape != dirs.shape or origins.ndim != 2 or origins.shape[1] != 3:
        raise ValueError(f"origins and dirs must both have shape (N, 3), got {origins.shape} and {dirs.shape}")
    t_best, n_best = _hit_background(origins, dirs, scene.background_radius)
    sid = np.full(len(origins), -1, dtype=np.int64)
    candidates = [(0, _hit_ground(origins, dirs))]
    for k, obj in enumerate(scene.objects):
        center = np.asarray(obj.center, dtype=np.float64)
        if obj.kind == "sphere":
            hit = _hit_sphere(origins, dirs, center, obj.size[0])
        elif obj.kind == "box":
            hit = _hit_box(origins, dirs, center, np.asarray(obj.size, dtype=np.float64), obj.yaw)
        elif obj.kind == "cylinder":
            hit = _hit_cylinder(origins, dirs, center, obj.size[0], obj.size[2])
        else:
            raise ValueError(f"unknown object kind {obj.kind!r}")
        candidates.append((k + 1, hit))
    for surface_id, (t, n) in candidates:
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        n_best = np.where(closer[:, None], n, n_best)
        sid = np.where(closer, surface_id, sid)
    return t_best, n_best, sid


# ----------------------------------------------------------------------------------------------------------------
# Textures and shading


def _value_noise(p: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Periodic trilinear value noise in [0, 1] with smoothstep weights."""
    size = lattice.shape[0]
    base = np.floor(p)
    f = p - base
    w = f * f * (3.0 - 2.0 * f)
    i = base.astype(np.int64) % size
    j = (i + 1) % size
    out = np.zeros(len(p))
    for cx in (0, 1):
        ix = j[:, 0] if cx else i[:, 0]
        wx = w[:, 0] if cx else 1 - w[:, 0]
        for cy in (0, 1):
            iy = j[:, 1] if cy else i[:, 1]
            wy = w[:, 1] if cy else 1 - w[:, 1]
            for cz in (0, 1):
                iz = j[:, 2] if cz else i[:, 2]
                wz = w[:, 2] if cz else 1 - w[:, 2]
                out += wx * wy * wz * lattice[ix, iy, iz]
    return out


def _object_albedo(obj: SceneObject, p: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    local = (p - np.asarray(obj.center)) @ _yaw_matrix(obj.yaw)
    a = np.asarray(obj.color_a)
    b = np.asarray(obj.color_b)
    if obj.texture == "checker":
        parity = np.floor(local * obj.frequency).astype(np.int64).sum(axis=1) % 2
        mix = parity.astype(np.float64)
    elif obj.texture == "stripes":
        mix = (np.mod(local @ np.asarray(obj.stripe_axis) * obj.frequency, 1.0) >= 0.5).astype(np.float64)
    elif obj.texture == "noise":
        q = local * obj.frequency
        mix = 0.65 * _value_noise(q, lattice) + 0.35 * _value_noise(2.0 * q + 17.0, lattice)
        mix = np.clip((mix - 0.5) * 2.2 + 0.5, 0.0, 1.0)
    else:
        raise ValueError(f"unknown texture {obj.texture!r}")
    return a * (1 - mix[:, None]) + b * mix[:, None]


def _ground_albedo(scene: SynthScene, p: np.ndarray) -> np.ndarray:
    cell = np.floor(p[:, :2] / scene.ground_cell).astype(np.int64)
    parity = (cell.sum(axis=1) % 2).astype(np.float64)[:, None]
    a = np.asarray(scene.ground_colors[0])
    b = np.asarray(scene.ground_colors[1])
    # Fade the pattern to its mean far from the centre (a world-space property, so still view-consistent):
    # keeps the distant ground from aliasing differently in every view.
    fade = np.clip(1.0 - (np.linalg.norm(p[:, :2], axis=1) - 4.0) / 3.0, 0.0, 1.0)[:, None]
    mix = 0.5 + (parity - 0.5) * fade
    grain_coords = np.concatenate([p[:, :2] * 9.0, np.zeros((len(p), 1))], axis=1)
    grain = 1.0 + (0.5 * _value_noise(grain_coords, scene.noise_lattice) - 0.25) * fade[:, 0]
    return np.clip((a * (1 - mix) + b * mix) * grain[:, None], 0.0, 1.0)


def _sky_color(scene: SynthScene, d: np.ndarray) -> np.ndarray:
    elevation = np.arcsin(np.clip(d[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(d[:, 1], d[:, 0])
    h = np.clip(elevation / (np.pi / 2), 0.0, 1.0)[:, None]
    base = np.asarray(scene.sky_colors[0]) * (1 - h) + np.asarray(scene.sky_colors[1]) * h
    seg = np.floor((azimuth + np.pi) / (2 * np.pi) * scene.sky_segments).astype(np.int64)
    band = np.floor(elevation / (np.pi / 2) * 8).astype(np.int64)
    pattern = ((seg + band) % 2).astype(np.float64)
    wave = 0.5 + 0.5 * np.sin(azimuth * scene.sky_segments * 3.0 + elevation * 20.0)
    return np.clip(base * (0.6 + 0.3 * pattern + 0.15 * wave)[:, None], 0.0, 1.0)


def lambert_shade(
    normals: Float[np.ndarray, "N 3"], light_dir: Float[np.ndarray, "3"], ambient: float
) -> Float[np.ndarray, "N"]:
    """Shading factor `ambient + (1 - ambient) * max(0, n . l)` (no shadows)."""
    return ambient + (1.0 - ambient) * np.clip(normals @ np.asarray(light_dir, dtype=np.float64), 0.0, None)


def shade_rays(
    scene: SynthScene, origins: Float[np.ndarray, "N 3"], dirs: Float[np.ndarray, "N 3"]
) -> Tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"], Int[np.ndarray, "N"]]:
    """Cast and shade rays: (linear RGB in [0, 1], hit points, surface ids as in `cast_rays`)."""
    t, normals, sid = cast_rays(scene, origins, dirs)
    points = origins + dirs * t[:, None]
    rgb = np.zeros_like(points)
    sky = sid == -1
    rgb[sky] = _sky_color(scene, dirs[sky])
    shade = lambert_shade(normals, np.asarray(scene.light_dir), scene.ambient)
    ground = sid == 0
    rgb[ground] = _ground_albedo(scene, points[ground]) * shade[ground, None]
    for k, obj in enumerate(scene.objects):
        mask: Bool[np.ndarray, "N"] = sid == k + 1
        if mask.any():
            rgb[mask] = _object_albedo(obj, points[mask], scene.noise_lattice) * shade[mask, None]
    return np.clip(rgb, 0.0, 1.0), points, sid


def render_view(
    scene: SynthScene, c2w: Float[np.ndarray, "3 4"], intrinsics: Intrinsics, supersample: int = 2
) -> Float[np.ndarray, "H W 3"]:
    """Render one view; RGB in [0, 1], box-filtered over `supersample**2` rays per pixel."""
    origins, dirs = camera_rays(c2w, intrinsics, supersample)
    rgb, _, _ = shade_rays(scene, origins, dirs)
    return rgb.reshape(intrinsics.height, intrinsics.width, supersample * supersample, 3).mean(axis=2)


# ----------------------------------------------------------------------------------------------------------------
# Geometry: depth and co-visibility (exact: from the analytic surfaces, no depth maps)

VISIBILITY_RTOL = 1e-6
"""Relative tolerance of the exact visibility test: a point is visible from a camera when the first surface along
the ray towards it is no nearer than (1 - VISIBILITY_RTOL) times its distance (float round-off only)."""


def view_depth(
    scene: SynthScene, c2w: Float[np.ndarray, "3 4"], intrinsics: Intrinsics
) -> Tuple[Float[np.ndarray, "H W"], Float[np.ndarray, "N 3"]]:
    """Z-depth of each pixel centre's first hit (distance from the camera plane along the viewing axis, the
    convention of `difix_ns.geometry.warp`) and the hit points [H*W, 3] (row-major)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    origins, dirs = camera_rays(c2w, intrinsics, supersample=1)
    t, _, _ = cast_rays(scene, origins, dirs)
    forward = -c2w[:3, 2]
    depth = (t * (dirs @ forward)).reshape(intrinsics.height, intrinsics.width)
    return depth, origins + dirs * t[:, None]


def visible_from(
    scene: SynthScene, points: Float[np.ndarray, "N 3"], c2w: Float[np.ndarray, "3 4"], intrinsics: Intrinsics
) -> Bool[np.ndarray, "N"]:
    """Whether a pinhole camera sees each surface point: in front of it, projected inside its image
    ([0, W] x [0, H]), and the first surface along the ray from the camera centre towards it is the point itself."""
    c2w = np.asarray(c2w, dtype=np.float64)
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = -cam[:, 2]
    safe_z = np.where(z > _EPS, z, 1.0)
    u = intrinsics.fx * cam[:, 0] / safe_z + intrinsics.cx
    v = -intrinsics.fy * cam[:, 1] / safe_z + intrinsics.cy
    seen = (z > _EPS) & (u >= 0) & (u <= intrinsics.width) & (v >= 0) & (v <= intrinsics.height)
    offsets = points[seen] - c2w[:3, 3]
    distance = np.linalg.norm(offsets, axis=1)
    origins = np.broadcast_to(c2w[:3, 3], offsets.shape).copy()
    t, _, _ = cast_rays(scene, origins, offsets / distance[:, None])
    seen[seen] = t >= distance * (1.0 - VISIBILITY_RTOL)
    return seen


def covisible_pixels(
    scene: SynthScene, c2w: Float[np.ndarray, "3 4"], others: List[Float[np.ndarray, "3 4"]], intrinsics: Intrinsics
) -> Bool[np.ndarray, "H W"]:
    """Pixels of the view `c2w` whose pixel-centre surface point at least one camera of `others` sees
    (`visible_from`, all cameras sharing `intrinsics`): the co-visibility mask of DyCheck, exact."""
    _, points = view_depth(scene, c2w, intrinsics)
    seen = np.zeros(len(points), dtype=bool)
    for other in others:
        todo = ~seen
        seen[todo] = visible_from(scene, points[todo], other, intrinsics)
    return seen.reshape(intrinsics.height, intrinsics.width)
