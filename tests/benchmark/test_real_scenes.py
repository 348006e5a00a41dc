"""Captured scenes as users bring them (a COLMAP folder, an instant-ngp transforms.json) through the benchmark's
scene derivation: read-only sources, downscaled images with matching intrinsics, undistortion, estimated masks."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.utils import colmap_parsing_utils as colmap
from PIL import Image

from difix_ns.benchmark.command import BenchmarkConfig, _splits
from difix_ns.benchmark.methods import METHODS
from difix_ns.benchmark.split import Split, _write_masks, choose_split, estimate_split_covisibility, write_split_dataset
from difix_ns.data.scene_io import derive_scene, read_transforms, scene_format

W, H, F = 64, 48, 50.0


def _look_at_origin(angle: float) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) on a circle of radius 3, looking at the origin."""
    position = np.array([3 * np.cos(angle), 3 * np.sin(angle), 0.5])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    c2w[:3, 3] = position
    return c2w


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _colmap_folder(root: Path, views: int = 8, model: str = "PINHOLE", k1: float = 0.0) -> Path:
    """A COLMAP model (written by nerfstudio's own writer) + images/ of `views` cameras around the origin."""
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    params = np.array([F, F, W / 2, H / 2]) if model == "PINHOLE" else np.array([F, W / 2, H / 2, k1])
    cameras = {1: colmap.Camera(id=1, model=model, width=W, height=H, params=params)}
    images = {}
    for i in range(views):
        w2c = np.linalg.inv(_look_at_origin(2 * np.pi * i / views))
        name = f"frame_{i:03d}.jpg"
        images[i + 1] = colmap.Image(
            id=i + 1, qvec=colmap.rotmat2qvec(w2c[:3, :3]), tvec=w2c[:3, 3], camera_id=1, name=name,
            xys=np.zeros((0, 2)), point3D_ids=np.zeros(0, dtype=np.int64),
        )
        Image.new("RGB", (W, H), (20 * i, 100, 200)).save(root / "images" / name)
    points = {
        j + 1: colmap.Point3D(
            id=j + 1, xyz=np.random.default_rng(j).normal(size=3) * 0.3, rgb=np.array([200, 50, 50]), error=0.1,
            image_ids=np.array([1]), point2D_idxs=np.array([0]),
        )
        for j in range(20)
    }
    colmap.write_model(cameras, images, points, root / "sparse" / "0", ext=".bin")
    return root


@pytest.fixture
def colmap_data(tmp_path):
    data = _colmap_folder(tmp_path / "capture")
    _read_only(data)
    yield data
    for path in [data, *data.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_colmap_folder_is_derived_downscaled_without_writing_into_it(colmap_data, tmp_path):
    before = _snapshot(colmap_data)
    assert scene_format(colmap_data) == "colmap"
    folder = derive_scene(colmap_data, tmp_path / "out" / "scenes" / "capture", downscale=2)
    assert _snapshot(colmap_data) == before, "the dataset folder must not change"
    meta = read_transforms(folder)
    assert len(meta["frames"]) == 8
    assert (meta["w"], meta["h"]) == (W // 2, H // 2) and meta["fl_x"] == pytest.approx(F / 2)
    assert meta["cx"] == pytest.approx(W / 4) and meta["cy"] == pytest.approx(H / 4)
    for frame in meta["frames"]:
        with Image.open(folder / frame["file_path"]) as image:
            assert image.size == (W // 2, H // 2)
        assert not (folder / frame["file_path"]).is_symlink()
    assert (folder / meta["ply_file_path"]).is_file(), "COLMAP's points initialise splatfacto"
    outputs = NerfstudioDataParserConfig(data=folder).setup().get_dataparser_outputs("train")
    assert int(outputs.cameras.width[0]) == W // 2 and float(outputs.cameras.fx[0]) == pytest.approx(F / 2)


def test_colmap_poses_are_nerfstudios(colmap_data, tmp_path):
    """The same poses as nerfstudio's own colmap dataparser reads from the folder (its world and scale)."""
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    folder = derive_scene(colmap_data, tmp_path / "scene")
    ours = NerfstudioDataParserConfig(data=folder, load_3D_points=False).setup().get_dataparser_outputs("train")
    theirs = ColmapDataParserConfig(
        data=colmap_data, colmap_path=Path("sparse/0"), load_3D_points=False, eval_mode="all"
    ).setup()
    theirs = theirs.get_dataparser_outputs("train")
    names = [p.name for p in theirs.image_filenames]
    order = [names.index(p.name) for p in ours.image_filenames]
    torch.testing.assert_close(ours.cameras.camera_to_worlds, theirs.cameras.camera_to_worlds[order], atol=1e-4, rtol=0)


def test_at_full_size_without_distortion_images_are_links_to_the_source(colmap_data, tmp_path):
    folder = derive_scene(colmap_data, tmp_path / "scene", downscale=1)
    meta = read_transforms(folder)
    first = folder / meta["frames"][0]["file_path"]
    assert first.is_symlink() and first.resolve().parent == (colmap_data / "images").resolve()
    assert meta["w"] == W and meta["fl_x"] == pytest.approx(F)


def test_distorted_cameras_are_undistorted_to_a_pinhole_camera_that_matches_the_pixels(tmp_path):
    """A bright dot drawn where the radial camera sees a point lands where the derived pinhole camera sees it."""
    k1 = 0.15
    data = _colmap_folder(tmp_path / "capture", views=4, model="SIMPLE_RADIAL", k1=k1)
    x, y = 0.45, 0.3  # a normalised camera-plane point away from the centre
    r2 = x * x + y * y
    u, v = F * x * (1 + k1 * r2) + W / 2, F * y * (1 + k1 * r2) + H / 2  # COLMAP: pixel centres at +0.5
    dot = np.zeros((H, W, 3), dtype=np.uint8)
    dot[int(v) - 1 : int(v) + 2, int(u) - 1 : int(u) + 2] = 255
    Image.fromarray(dot).save(data / "images" / "frame_000.jpg", quality=100)
    folder = derive_scene(data, tmp_path / "scene")
    meta = read_transforms(folder)
    assert meta["camera_model"] == "PINHOLE" and "k1" not in meta
    image = np.asarray(Image.open(folder / meta["frames"][0]["file_path"]).convert("L")).astype(float)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    weight = np.where(image > 60, image, 0)
    found = ((weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum())
    expected = (meta["fl_x"] * x + meta["cx"], meta["fl_y"] * y + meta["cy"])
    source = (int(u) + 0.5, int(v) + 0.5)  # the drawn dot's centre, where a distorted camera sees it
    assert np.hypot(found[0] - expected[0], found[1] - expected[1]) < 0.5
    assert np.hypot(source[0] - expected[0], source[1] - expected[1]) > 1.0, "the test point must move"


def test_an_instant_ngp_folder_with_a_subfolder_and_camera_angle_x(tmp_path):
    data = tmp_path / "ngp"
    (data / "shots" / "day1").mkdir(parents=True)
    frames = []
    for i in range(8):
        Image.new("RGB", (W, H), (i * 30, 0, 0)).save(data / "shots" / "day1" / f"{i:03d}.jpg")
        c2w = _look_at_origin(2 * np.pi * i / 8)
        c2w[:3, 1:3] *= -1  # OpenGL
        frames.append({"file_path": f"./shots/day1/{i:03d}", "transform_matrix": c2w.tolist()})
    (data / "transforms.json").write_text(json.dumps({"camera_angle_x": 1.2, "aabb_scale": 4, "frames": frames}))
    _read_only(data)
    before = _snapshot(data)
    folder = derive_scene(data, tmp_path / "out", downscale=4)
    assert _snapshot(data) == before
    meta = read_transforms(folder)
    assert meta["frames"][0]["file_path"] == "shots/day1/000.png" and len(meta["frames"]) == 8
    assert (meta["w"], meta["h"]) == (W // 4, H // 4) and "camera_angle_x" not in meta
    assert meta["fl_x"] == pytest.approx(0.5 * W / np.tan(0.6) / 4)
    split = choose_split(meta, train_every=4)
    split_folder = write_split_dataset(folder, meta, split, tmp_path / "split")
    outputs = NerfstudioDataParserConfig(data=split_folder, load_3D_points=False).setup().get_dataparser_outputs("test")
    assert len(outputs.image_filenames) == 6 and int(outputs.cameras.height[0]) == H // 4
    for path in [data, *data.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_the_benchmark_derives_a_data_scene_into_its_output_folder(colmap_data, tmp_path):
    config = BenchmarkConfig(
        data=colmap_data, train_every=4, downscale=2, out=tmp_path / "bench", methods=("splatfacto",)
    )
    [(scene, source, meta, split)] = _splits(config, [METHODS["splatfacto"]])
    assert scene == "capture" and source == tmp_path / "bench" / "scenes" / "capture"
    assert (len(split.train), len(split.eval)) == (2, 6) and meta["w"] == W // 2
    again = BenchmarkConfig(
        data=colmap_data, train_every=4, downscale=1, out=tmp_path / "bench", methods=("splatfacto",)
    )
    with pytest.raises(ValueError, match="choose another --out"):  # its runs are at the other resolution
        _splits(again, [METHODS["splatfacto"]])
    with pytest.raises(ValueError, match="downscale must be an integer >= 1"):
        _splits(BenchmarkConfig(data=colmap_data, train_every=4, downscale=0, out=tmp_path / "b2"), [])


def test_a_folder_that_is_no_scene_and_a_target_inside_the_source_are_clear_errors(colmap_data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a nerfstudio dataset"):
        derive_scene(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        derive_scene(colmap_data, colmap_data / "derived")


def test_masks_from_depth_follow_what_the_training_views_see(tmp_path):
    """Two cameras facing a plane, one shifted sideways: the evaluation view sees beyond the training view's edge."""
    split = Split(["images/a.png"], ["images/b.png"], {"images/b.png": 1.0}, {"images/b.png": "far"}, 1.0, "test")
    K = torch.tensor([[20.0, 0, 16], [0, 20, 12], [0, 0, 1]])
    c2w_a = torch.eye(4)[:3]
    c2w_b = c2w_a.clone()
    c2w_b[0, 3] = 1.0  # one unit to the right, plane at depth 2: a quarter of the image width beyond the edge
    depth = {"a.png": torch.full((24, 32), 2.0), "b.png": torch.full((24, 32), 2.0)}
    coverage = _write_masks(split, depth, {"a.png": c2w_a, "b.png": c2w_b}, {"a.png": K, "b.png": K}, tmp_path)
    mask = np.asarray(Image.open(tmp_path / "b.png")) > 127
    assert mask[:, :21].all() and not mask[:, 23:].any()
    assert coverage == pytest.approx(mask.mean())


@pytest.mark.slow
def test_estimated_masks_come_from_a_short_geometry_run_and_are_reused(colmap_data, tmp_path):
    """The one ns-train of this file (2 steps on 32x24 images)."""
    folder = derive_scene(colmap_data, tmp_path / "scene", downscale=2)
    meta = read_transforms(folder)
    split = choose_split(meta, train_every=4)
    split_folder = write_split_dataset(folder, meta, split, tmp_path / "split")
    result = estimate_split_covisibility(folder, meta, split, split_folder, tmp_path / "covis", iterations=2)
    masks = sorted((split_folder / "covis").glob("*.png"))
    assert [m.stem for m in masks] == sorted(Path(n).stem for n in split.eval)
    with Image.open(masks[0]) as mask:
        assert mask.size == (W // 2, H // 2)
    assert result["estimated"] and 0.0 <= result["coverage"] <= 1.0 and result["seconds"] > 0
    again = estimate_split_covisibility(folder, meta, split, split_folder, tmp_path / "covis", iterations=2)
    assert again == result, "a rerun reuses the masks"
