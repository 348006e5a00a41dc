"""Sparse-view split: explicit, disjoint, binned by pose distance, readable by nerfstudio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from difix_ns.benchmark.split import choose_split, write_split_dataset
from difix_ns.data.scene_io import read_transforms


def _orbit_meta(n: int) -> dict:
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        c2w = np.eye(4)
        c2w[:3, 3] = [3 * np.cos(a), 3 * np.sin(a), 0.5]
        c2w[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        frames.append({"file_path": f"images/{i:03d}.png", "transform_matrix": c2w.tolist()})
    return {"fl_x": 20.0, "fl_y": 20.0, "cx": 16.0, "cy": 16.0, "w": 32, "h": 32, "frames": frames}


def test_every_kth_view_trains_and_the_rest_evaluate_disjointly():
    split = choose_split(_orbit_meta(24), train_every=6)
    assert split.train == [f"images/{i:03d}.png" for i in range(0, 24, 6)]
    assert set(split.train).isdisjoint(split.eval)
    assert len(split.train) + len(split.eval) == 24


def test_views_spread_along_the_trajectory():
    split = choose_split(_orbit_meta(20), train_views=5)
    assert len(split.train) == 5 and split.train[0] == "images/000.png" and split.train[-1] == "images/019.png"


def test_distance_bins_follow_the_poses():
    split = choose_split(_orbit_meta(24), train_every=6)
    # The view next to a training view is nearer than the one half way between two training views.
    assert split.distance["images/001.png"] < split.distance["images/003.png"]
    assert split.bin["images/001.png"] == "near"
    assert split.bin["images/003.png"] in ("mid", "far")
    order = ["near", "mid", "far"]
    ranked = sorted(split.eval, key=split.distance.get)
    assert [order.index(split.bin[v]) for v in ranked] == sorted(order.index(split.bin[v]) for v in ranked)


def test_too_few_views_for_the_split_is_a_clear_error():
    with pytest.raises(ValueError, match="train_views must be in"):
        choose_split(_orbit_meta(4), train_views=4)
    with pytest.raises(ValueError, match="need at least 2"):
        choose_split(_orbit_meta(3), train_every=3)


def test_missing_transforms_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="transforms.json"):
        read_transforms(tmp_path)


def test_split_dataset_is_read_by_nerfstudio_with_exactly_the_split(synth_scene, tmp_path):
    meta = read_transforms(synth_scene)
    split = choose_split(meta, train_views=4)
    folder = write_split_dataset(synth_scene, meta, split, tmp_path / "split")
    parser = NerfstudioDataParserConfig(data=folder, load_3D_points=False).setup()
    train = [p.name for p in parser.get_dataparser_outputs("train").image_filenames]
    test = [p.name for p in parser.get_dataparser_outputs("test").image_filenames]
    assert sorted(train) == sorted(n.split("/")[-1] for n in split.train)
    assert sorted(test) == sorted(n.split("/")[-1] for n in split.eval)
    assert json.loads((folder / "split.json").read_text())["rule"] == "4 views spread along the trajectory"


def test_synthetic_scene_keeps_its_own_sparse_split(synth_scene):
    meta = read_transforms(synth_scene)
    split = choose_split(meta)
    assert len(split.train) == len(meta["train_filenames"])
    assert any(b == "far" for b in split.bin.values())


def test_instant_ngp_style_dataset_is_split_and_read_by_nerfstudio(tmp_path):
    from PIL import Image

    meta = _orbit_meta(8)
    for frame in meta["frames"]:
        frame["file_path"] = "./" + frame["file_path"].removesuffix(".png")  # instant-ngp: no extension
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        del meta[key]
    meta["camera_angle_x"] = 1.2
    meta["aabb_scale"] = 4
    (tmp_path / "images").mkdir()
    for i in range(8):
        Image.new("RGB", (32, 24), (i * 30, 0, 0)).save(tmp_path / "images" / f"{i:03d}.png")
    (tmp_path / "transforms.json").write_text(json.dumps(meta))

    split = choose_split(read_transforms(tmp_path), train_every=4)
    folder = write_split_dataset(tmp_path, read_transforms(tmp_path), split, tmp_path / "split")
    outputs = NerfstudioDataParserConfig(data=folder, load_3D_points=False).setup().get_dataparser_outputs("train")
    assert [p.name for p in outputs.image_filenames] == ["000.png", "004.png"]
    assert int(outputs.cameras.width[0]) == 32 and int(outputs.cameras.height[0]) == 24
    assert float(outputs.cameras.fx[0]) == pytest.approx(0.5 * 32 / np.tan(0.6), rel=1e-4)


def test_a_frame_without_its_image_is_a_clear_error(tmp_path):
    meta = _orbit_meta(8)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="images/000.png"):
        write_split_dataset(tmp_path, meta, choose_split(meta, train_every=4), tmp_path / "split")
