"""Tests for the procedural synthetic scenes (`difix_ns.data.synth`, `difix-ns synth`)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_ns.data.synth import SynthConfig, build_scene, make_synthetic_scene
from difix_ns.progressive.poses import pose_distance_parts
from difix_ns.data.synth_render import Intrinsics, render_view

RES = 64


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _poses(root: Path) -> dict:
    transforms = json.loads((root / "transforms.json").read_text())
    return {f["file_path"]: np.array(f["transform_matrix"]) for f in transforms["frames"]}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return make_synthetic_scene(SynthConfig(out=tmp_path_factory.mktemp("synth") / "s0", seed=0, resolution=RES))


def test_files_and_transforms(scene_dir: Path):
    transforms = json.loads((scene_dir / "transforms.json").read_text())
    assert transforms["camera_model"] == "OPENCV"
    assert (transforms["w"], transforms["h"]) == (RES, RES)
    assert len(transforms["frames"]) == 8 + 12
    assert transforms["val_filenames"] == transforms["test_filenames"]
    assert not set(transforms["train_filenames"]) & set(transforms["val_filenames"])
    assert (scene_dir / transforms["ply_file_path"]).is_file()
    for frame in transforms["frames"]:
        c2w = np.array(frame["transform_matrix"])
        assert c2w.shape == (4, 4)
        np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-9)
        # OpenGL convention: the camera looks down its -z axis, towards the scene centre near the origin.
        to_center = -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3])
        assert float(-c2w[:3, 2] @ to_center) > 0.97
        assert c2w[2, 1] > 0  # camera y axis points up (world z up)


def test_same_seed_identical_bytes_and_other_seed_differs(scene_dir: Path, tmp_path: Path):
    again = make_synthetic_scene(SynthConfig(out=tmp_path / "again", seed=0, resolution=RES))
    assert _files(again) == _files(scene_dir)

    other = make_synthetic_scene(SynthConfig(out=tmp_path / "other", seed=1, resolution=RES))
    a, b = _files(scene_dir), _files(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".png"))
    scene_a = json.loads(a["synth_meta.json"])["scene"]["objects"]
    scene_b = json.loads(b["synth_meta.json"])["scene"]["objects"]
    assert [o["center"] for o in scene_a] != [o["center"] for o in scene_b]
    assert [o["color_a"] for o in scene_a] != [o["color_a"] for o in scene_b]


def test_images_have_size_and_high_frequency_texture(scene_dir: Path):
    images = sorted((scene_dir / "images").glob("*.png"))
    assert len(images) == 20
    for path in images:
        with Image.open(path) as im:
            assert im.size == (RES, RES) and im.mode == "RGB"
            arr = np.asarray(im).astype(np.float64) / 255.0
        gradient = np.abs(np.diff(arr, axis=0)).mean() + np.abs(np.diff(arr, axis=1)).mean()
        assert gradient > 0.05, f"{path.name} looks flat (mean gradient {gradient:.3f})"
        distinct = len(np.unique((arr * 15).round().reshape(-1, 3), axis=0))
        assert distinct >= 30, f"{path.name} has only {distinct} distinct quantized colours"
        assert arr.std() > 0.08


def _parser(scene_dir: Path, load_points: bool = False):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=scene_dir, load_3D_points=load_points).setup()


def test_nerfstudio_dataparser_reads_the_split(scene_dir: Path):
    transforms = json.loads((scene_dir / "transforms.json").read_text())
    parser = _parser(scene_dir)
    expected = {
        "train": transforms["train_filenames"],
        "val": transforms["val_filenames"],
        "test": transforms["test_filenames"],
    }
    for split, names in expected.items():
        outputs = parser.get_dataparser_outputs(split)
        assert len(outputs.image_filenames) == (8 if split == "train" else 12)
        assert sorted(outputs.image_filenames) == sorted(scene_dir / n for n in names)
        assert outputs.cameras.width.flatten().tolist() == [RES] * len(names)
        # Default orientation and auto scale keep every camera inside the unit box.
        assert float(outputs.cameras.camera_to_worlds[:, :3, 3].abs().max()) <= 1.0 + 1e-5


def _open3d_or_none():
    try:
        import open3d  # noqa: F401

        return open3d
    except (ImportError, OSError):
        return None


def _read_binary_ply(path: str) -> tuple:
    raw = Path(path).read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    count = int(next(line for line in header.decode().splitlines() if line.startswith("element vertex")).split()[-1])
    data = np.frombuffer(body, dtype=np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]), count=count)
    return data["xyz"].astype(np.float64), data["rgb"].astype(np.float64) / 255.0


def test_dataparser_loads_3d_points(scene_dir: Path, monkeypatch):
    if _open3d_or_none() is None:
        # open3d is installed but cannot be imported on this machine (missing system library, e.g. libusb);
        # stand in for its reader so nerfstudio's own `_load_3D_points` still runs end to end.
        def read_point_cloud(path):
            xyz, rgb = _read_binary_ply(path)
            return types.SimpleNamespace(points=xyz, colors=rgb)

        stand_in = types.SimpleNamespace(io=types.SimpleNamespace(read_point_cloud=read_point_cloud))
        monkeypatch.setitem(sys.modules, "open3d", stand_in)
    outputs = _parser(scene_dir, load_points=True).get_dataparser_outputs("train")
    xyz, rgb = outputs.metadata["points3D_xyz"], outputs.metadata["points3D_rgb"]
    assert xyz.shape == (4000, 3) and rgb.shape == (4000, 3)
    # Most points (objects and ground) lie near the cameras' region; background points sit further out.
    assert float(xyz.abs().amax(dim=1).median()) < 2.0
    assert len(np.unique(rgb.numpy(), axis=0)) > 100


def test_ply_reads_with_real_open3d(scene_dir: Path):
    o3d = _open3d_or_none()
    if o3d is None:
        pytest.skip("open3d cannot be imported on this machine")
    pcd = o3d.io.read_point_cloud(str(scene_dir / "sparse_pc.ply"))
    xyz, rgb = _read_binary_ply(str(scene_dir / "sparse_pc.ply"))
    np.testing.assert_allclose(np.asarray(pcd.points), xyz, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pcd.colors), rgb, atol=1e-6)


def test_some_eval_views_are_far_from_every_training_view(scene_dir: Path):
    transforms = json.loads((scene_dir / "transforms.json").read_text())
    poses = _poses(scene_dir)
    train = [poses[n] for n in transforms["train_filenames"]]

    def nearest(pose, others):
        return min(float(sum(pose_distance_parts(pose[None], o[None]))) for o in others if o is not pose)

    spacing = max(nearest(p, train) for p in train)
    eval_distances = {n: nearest(poses[n], train) for n in transforms["val_filenames"]}
    far = [n for n, d in eval_distances.items() if d > spacing]
    near = [n for n, d in eval_distances.items() if d <= spacing]
    assert len(far) >= 1 and len(near) >= 1

    meta = json.loads((scene_dir / "synth_meta.json").read_text())
    assert meta["train_nn_spacing_max"] == pytest.approx(spacing)
    assert [t["file_path"] for t in meta["train"]] == transforms["train_filenames"]
    for entry in meta["eval"]:
        assert entry["distance"] == pytest.approx(eval_distances[entry["file_path"]])
        assert entry["label"] == ("far" if entry["file_path"] in far else "near")
        if entry["role"] == "interpolated":
            assert entry["label"] == "near"


def test_center_pixel_matches_lambert_shading_of_a_known_object():
    # Find a seed whose scene has a sphere (spheres always carry a two-tone texture).
    for seed in range(50):
        scene = build_scene(SynthConfig(seed=seed))
        spheres = [o for o in scene.objects if o.kind == "sphere"]
        if spheres:
            break
    sphere = spheres[0]
    cx, cy, cz = sphere.center
    radius = sphere.size[0]
    # Camera straight above the sphere, looking down (-z): identity rotation in the OpenGL convention.
    # Objects never overlap in their ground footprint, so nothing can occlude the top of the sphere.
    c2w = np.array([[1.0, 0, 0, cx], [0, 1.0, 0, cy], [0, 0, 1.0, cz + radius + 0.5]])
    size = 17
    intr = Intrinsics(fx=20.0, fy=20.0, cx=size / 2, cy=size / 2, width=size, height=size)
    image = render_view(scene, c2w, intr, supersample=1)
    pixel = image[size // 2, size // 2]
    normal = np.array([0.0, 0.0, 1.0])  # top of the sphere
    shade = scene.ambient + (1 - scene.ambient) * max(0.0, float(normal @ np.array(scene.light_dir)))
    candidates = [np.array(sphere.color_a) * shade, np.array(sphere.color_b) * shade]
    error = min(np.abs(pixel - c).max() for c in candidates)
    assert error < 1e-9, f"centre pixel {pixel} is not the sphere's shaded colour {candidates}"
    assert not math.isclose(shade, scene.ambient)  # lit from above: the diffuse term contributes


@pytest.mark.parametrize(
    "option, value",
    [
        ("resolution", 0),
        ("resolution", 4096),
        ("num_train_views", 1),
        ("num_train_views", 65),
        ("num_eval_views", 1),
        ("num_objects", 0),
        ("num_objects", 21),
        ("supersample", 0),
        ("train_arc_deg", 360.0),
        ("num_points", 0),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(tmp_path: Path, option: str, value):
    config = dataclasses.replace(SynthConfig(out=tmp_path / "x"), **{option: value})
    with pytest.raises(ValueError, match=option):
        make_synthetic_scene(config)
    assert not (tmp_path / "x").exists()


def test_non_empty_out_needs_overwrite(tmp_path: Path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="overwrite"):
        make_synthetic_scene(SynthConfig(out=out, resolution=16))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    make_synthetic_scene(SynthConfig(out=out, resolution=16, num_train_views=10, overwrite=True))
    make_synthetic_scene(SynthConfig(out=out, resolution=16, num_train_views=3, num_eval_views=2, overwrite=True))
    assert len(list((out / "images").glob("*.png"))) == 5  # stale frames of the first run are gone
    assert (out / "keep.txt").read_text() == "user data"


def test_small_configs_still_have_near_and_far_views(tmp_path: Path):
    out = make_synthetic_scene(
        SynthConfig(out=tmp_path / "s", resolution=16, num_train_views=3, num_eval_views=2, train_arc_deg=150.0)
    )
    labels = [e["label"] for e in json.loads((out / "synth_meta.json").read_text())["eval"]]
    assert labels == ["near", "far"]


def _cli() -> str:
    exe = Path(sys.executable).parent / "difix-ns"
    if not exe.exists():
        pytest.skip("difix-ns console script is not installed next to this Python")
    return str(exe)


def test_cli_writes_a_dataset_and_rejects_bad_options(tmp_path: Path):
    done = subprocess.run(
        [_cli(), "synth", "--out", str(tmp_path / "cli"), "--seed", "1", "--resolution", "32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "cli" / "transforms.json").is_file()
    assert "Wrote synthetic scene" in done.stdout

    bad = subprocess.run(
        [_cli(), "synth", "--out", str(tmp_path / "bad"), "--resolution", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0
    assert "resolution" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()
