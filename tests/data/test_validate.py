"""Tests for the dataset check before training (`difix_ns.data.validate`) and its hook in our data managers.

Every bad input gets one `DatasetError` that names the file (or frame), before nerfstudio reads an image and
before any model is built; several problems are reported together; a good dataset passes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from difix_ns.data.validate import (
    MAX_LISTED,
    DatasetError,
    DatasetProblem,
    image_file_problem,
    transforms_problems,
    validate_dataparser_outputs,
    validate_dataset,
)

RES = 32
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clean_scene(tmp_path_factory) -> Path:
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    out = tmp_path_factory.mktemp("validate") / "scene"
    return make_synthetic_scene(SynthConfig(out=out, seed=0, resolution=RES, supersample=1, num_points=200))


@pytest.fixture
def scene(clean_scene, tmp_path) -> Path:
    """A fresh copy of the small synthetic scene (8 train, 12 eval views, 32 px) for one test to break."""
    return Path(shutil.copytree(clean_scene, tmp_path / "scene"))


def _edit_transforms(scene: Path, edit) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    edit(meta)
    (scene / "transforms.json").write_text(json.dumps(meta, indent=2))


def _frame(meta: dict, file_path: str) -> dict:
    return next(f for f in meta["frames"] if f["file_path"] == file_path)


def _set_pose_entry(scene: Path, file_path: str, row: int, col: int, value: float) -> None:
    def edit(meta):
        _frame(meta, file_path)["transform_matrix"][row][col] = value

    _edit_transforms(scene, edit)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _problems(scene: Path, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        validate_dataset(scene, **kwargs)
    return info.value


def _only(error: DatasetError, where: str, *words: str) -> None:
    """The error holds exactly one problem, at `where`, whose text has `words`; the message shows it."""
    assert [p.where for p in error.problems] == [where], str(error)
    assert where in str(error)
    for word in words:
        assert word in error.problems[0].what, str(error)


def test_good_dataset_passes_and_returns_parser_outputs(clean_scene: Path):
    outputs = validate_dataset(clean_scene)
    assert sorted(outputs) == ["train", "val"]
    assert len(outputs["train"].image_filenames) == 8 and len(outputs["val"].image_filenames) == 12
    assert transforms_problems(clean_scene / "transforms.json") == []


def test_error_is_a_value_error_and_pickles_with_its_problems():
    import pickle

    error = DatasetError([DatasetProblem("images/a.png", "file not found")], "the dataset d")
    assert isinstance(error, ValueError)
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)


def test_truncated_png_is_named(scene: Path):
    _truncate(scene / "images" / "train_001.png")
    _only(_problems(scene), "images/train_001.png", "truncated")


def _as_jpeg(scene: Path, name: str, mode: str = "RGB") -> Path:
    """Replace images/<name>.png by a JPEG of that `mode` in the files and in transforms.json."""
    png = scene / "images" / f"{name}.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).convert(mode).save(jpg, quality=90)
    png.unlink()
    old, new = f"images/{name}.png", f"images/{name}.jpg"

    def edit(meta):
        _frame(meta, old)["file_path"] = new
        for key in ("train_filenames", "val_filenames", "test_filenames"):
            meta[key] = [new if x == old else x for x in meta[key]]

    _edit_transforms(scene, edit)
    return jpg


def test_jpeg_dataset_passes(scene: Path):
    _as_jpeg(scene, "train_002")
    validate_dataset(scene)


@pytest.mark.parametrize("load_truncated_images", [False, True])
def test_truncated_jpeg_is_named_whatever_pillow_is_set_to(scene: Path, monkeypatch, load_truncated_images: bool):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated_images)
    _truncate(_as_jpeg(scene, "train_002"))
    _only(_problems(scene), "images/train_002.jpg", "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated_images  # restored


def test_png_cut_after_its_pixel_data_is_caught(scene: Path):
    path = scene / "images" / "eval_003.png"
    path.write_bytes(path.read_bytes()[:-10])  # IEND chunk cut: Pillow decodes the pixels without complaint
    _only(_problems(scene), "images/eval_003.png", "truncated")


def test_png_with_a_damaged_byte_is_caught(scene: Path):
    path = scene / "images" / "train_007.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _only(_problems(scene), "images/train_007.png", "corrupt")


def test_image_of_another_size_is_named_with_both_sizes(scene: Path):
    Image.open(scene / "images" / "train_004.png").resize((RES + 8, RES)).save(scene / "images" / "train_004.png")
    _only(_problems(scene), "images/train_004.png", f"{RES + 8}x{RES}", f"{RES}x{RES}")


def test_nan_in_one_transform_matrix_names_that_frame_only(scene: Path):
    _set_pose_entry(scene, "images/train_003.png", 1, 2, math.nan)
    # nerfstudio's auto-orientation averages the poses: every parsed pose is NaN, the raw frame names the culprit
    _only(_problems(scene), "images/train_003.png", "NaN")


def test_inf_in_an_eval_frame_is_named(scene: Path):
    _set_pose_entry(scene, "images/eval_007.png", 0, 3, math.inf)
    _only(_problems(scene), "images/eval_007.png", "inf")


@pytest.mark.parametrize("kind", ["scaled", "sheared", "mirrored"])
def test_non_rigid_pose_is_named(scene: Path, kind: str):
    def edit(meta):
        c2w = np.array(_frame(meta, "images/train_005.png")["transform_matrix"])
        if kind == "scaled":
            c2w[:3, :3] *= 1.1
        elif kind == "sheared":
            c2w[:3, 1] += 0.1 * c2w[:3, 0]
        else:
            c2w[:3, 0] *= -1.0
        _frame(meta, "images/train_005.png")["transform_matrix"] = c2w.tolist()

    _edit_transforms(scene, edit)
    _only(_problems(scene), "images/train_005.png", "not a rigid pose")


def test_small_rounding_of_poses_is_accepted(scene: Path):
    def edit(meta):
        for frame in meta["frames"]:
            frame["transform_matrix"] = np.round(np.array(frame["transform_matrix"]), 5).tolist()

    _edit_transforms(scene, edit)
    validate_dataset(scene)


@pytest.mark.parametrize("name", ["eval_005.png", "train_000.png"])
def test_missing_image_file_is_named(scene: Path, name: str):
    # train_000 is the first frame, which nerfstudio's parser opens to choose its downscale factor
    (scene / "images" / name).unlink()
    _only(_problems(scene), f"images/{name}", "file not found")


def test_train_filenames_naming_no_file(scene: Path):
    _edit_transforms(scene, lambda meta: meta["train_filenames"].append("images/nope.png"))
    _only(_problems(scene), "train_filenames", "images/nope.png", "no such file")


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split_is_reported(scene: Path, split: str):
    _edit_transforms(scene, lambda meta: meta.__setitem__(f"{split}_filenames", []))
    _only(_problems(scene), f"{split} split", "no images")


@pytest.mark.parametrize(
    "mode, usable",
    [("L", True), ("RGBA", True), ("LA", False), ("P", False), ("I;16", False), ("1", False), ("CMYK", False)],
)
def test_channels_nerfstudio_cannot_use(scene: Path, mode: str, usable: bool):
    if mode == "CMYK":  # PNG cannot hold CMYK
        path = _as_jpeg(scene, "eval_001", mode)
    else:
        path = scene / "images" / "eval_001.png"
        image = Image.open(path).convert("RGB")
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
        image.convert(mode).save(path) if mode != "I;16" else image.save(path)
    assert Image.open(path).mode == mode
    if usable:
        validate_dataset(scene)
    else:
        _only(_problems(scene), f"images/{path.name}", mode)


def test_masks_are_checked(scene: Path):
    (scene / "masks").mkdir()

    def edit(meta):
        for frame in meta["frames"]:
            mask = f"masks/{Path(frame['file_path']).name}"
            Image.new("L", (RES, RES), 255).save(scene / mask)
            frame["mask_path"] = mask

    _edit_transforms(scene, edit)
    validate_dataset(scene)
    Image.new("RGB", (RES, RES)).save(scene / "masks" / "train_006.png")
    Image.new("L", (RES, RES // 2)).save(scene / "masks" / "eval_002.png")
    error = _problems(scene)
    assert {p.where: p.what for p in error.problems}.keys() == {"masks/train_006.png", "masks/eval_002.png"}
    assert "3 channels" in str(error) and f"{RES}x{RES // 2}" in str(error)


def test_several_problems_are_all_reported_at_once(scene: Path):
    _truncate(scene / "images" / "train_001.png")
    Image.new("RGB", (RES, RES + 4)).save(scene / "images" / "train_006.png")
    (scene / "images" / "eval_002.png").unlink()
    Image.new("LA", (RES, RES)).save(scene / "images" / "eval_004.png")

    def edit(meta):
        _frame(meta, "images/train_003.png")["transform_matrix"][0][1] = math.nan
        _frame(meta, "images/train_005.png")["transform_matrix"][0][0] = 2.0

    _edit_transforms(scene, edit)
    start = time.perf_counter()
    error = _problems(scene)
    elapsed = time.perf_counter() - start
    assert {p.where for p in error.problems} == {
        f"images/{n}.png" for n in ("train_001", "train_006", "eval_002", "eval_004", "train_003", "train_005")
    }, str(error)
    assert len(error.problems) == 6 and str(error).startswith("6 problems in the dataset")
    assert elapsed < 10.0, elapsed


def test_listing_is_capped_with_a_count_of_the_rest():
    problems = [DatasetProblem(f"images/{i:03d}.png", "file not found") for i in range(MAX_LISTED + 7)]
    message = str(DatasetError(problems))
    assert message.count("file not found") == MAX_LISTED
    assert message.rstrip().endswith("... and 7 more")


def test_one_file_check(clean_scene: Path, tmp_path: Path, monkeypatch):
    good = clean_scene / "images" / "train_000.png"
    assert image_file_problem(good) is None and image_file_problem(good, (RES, RES)) is None
    assert "differs" in image_file_problem(good, (RES, RES + 1))
    assert image_file_problem(tmp_path / "none.png") == "file not found"
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "truncated" in image_file_problem(cut)


def test_instant_ngp_parser_is_checked_too(scene: Path):
    from nerfstudio.data.dataparsers.instant_ngp_dataparser import InstantNGPDataParserConfig

    ngp = InstantNGPDataParserConfig(train_split_fraction=0.8)
    validate_dataset(scene, ngp)
    (scene / "images" / "eval_005.png").unlink()  # that parser skips a missing file silently
    _truncate(scene / "images" / "train_001.png")
    error = _problems(scene, dataparser_config=ngp)
    assert {p.where for p in error.problems} == {"images/eval_005.png", "images/train_001.png"}, str(error)


def test_instant_ngp_parser_bug_with_one_eval_image_is_reported(scene: Path):
    from nerfstudio.data.dataparsers.instant_ngp_dataparser import InstantNGPDataParserConfig

    # 19 frames, fraction 0.9: one eval image, whose parsed camera is a 4x3 matrix instead of 1x3x4
    (scene / "images" / "eval_005.png").unlink()
    error = _problems(scene, dataparser_config=InstantNGPDataParserConfig(train_split_fraction=0.9))
    assert {p.where for p in error.problems} == {"images/eval_005.png", "val split"}, str(error)
    assert "shape 4x3" in str(error)


def test_parser_outputs_of_any_format(clean_scene: Path):
    """The check needs only parser outputs (as COLMAP's parser gives): cameras and file names, no transforms.json."""
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

    files = sorted((clean_scene / "images").glob("train_*.png"))[:3]
    c2w = torch.eye(4)[:3].repeat(3, 1, 1)
    c2w[1, 0, 0] = math.nan
    c2w[2, :3, :3] *= 3.0
    cameras = Cameras(
        camera_to_worlds=c2w,
        fx=torch.tensor([[20.0], [20.0], [-1.0]]),
        fy=20.0,
        cx=RES / 2,
        cy=RES / 2,
        width=RES,
        height=RES,
    )
    validate_dataparser_outputs({"train": DataparserOutputs(image_filenames=files[:1], cameras=cameras[:1])})
    with pytest.raises(DatasetError) as info:
        validate_dataparser_outputs(
            {"train": DataparserOutputs(files, cameras), "val": DataparserOutputs([], cameras[:0])},
            root=clean_scene,
        )
    found = {(p.where, p.what.split(" ")[0] + " " + p.what.split(" ")[1]) for p in info.value.problems}
    assert ("images/train_001.png", "camera pose") in found
    assert {p.where for p in info.value.problems} == {"images/train_001.png", "images/train_002.png", "val split"}
    assert "camera fx = -1 is not positive" in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# The hook: our data managers check before nerfstudio loads images and before the model is built


def _method_config(method: str, data: Path):
    if method == "difix-splatfacto":
        from difix_ns.method_configs.difix_splatfacto import difix_splatfacto as spec
    else:
        from difix_ns.method_configs.difix_nerfacto import difix_nerfacto as spec
    config = copy.deepcopy(spec.config)
    config.pipeline.datamanager.data = data
    return config


@pytest.fixture
def no_image_reads(monkeypatch):
    """nerfstudio's datasets refuse to read any image (the check must come first)."""
    from nerfstudio.data.datasets.base_dataset import InputDataset

    def refuse(*args, **kwargs):
        raise AssertionError("nerfstudio read an image before the dataset check")

    for name in ("get_numpy_image", "get_image_float32", "get_image_uint8", "get_data"):
        monkeypatch.setattr(InputDataset, name, refuse)


@pytest.mark.parametrize("method", ["difix-splatfacto", "difix-nerfacto"])
def test_pipeline_fails_before_images_and_model(scene: Path, method: str, monkeypatch, no_image_reads):
    _truncate(scene / "images" / "train_001.png")
    _set_pose_entry(scene, "images/eval_002.png", 2, 0, math.nan)
    config = _method_config(method, scene)
    model_class = config.pipeline.model._target

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the dataset check")

    monkeypatch.setattr(model_class, "__init__", no_model)
    with pytest.raises(DatasetError) as info:
        config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)
    assert {p.where for p in info.value.problems} == {"images/train_001.png", "images/eval_002.png"}


@pytest.mark.parametrize("method", ["difix-splatfacto", "difix-nerfacto"])
def test_data_manager_builds_on_a_good_dataset(clean_scene: Path, method: str):
    datamanager = _method_config(method, clean_scene).pipeline.datamanager.setup(device="cpu", test_mode="val")
    assert len(datamanager.train_dataset) == 8 and len(datamanager.eval_dataset) == 12


@pytest.mark.parametrize("method", ["difix-splatfacto", "difix-nerfacto"])
@pytest.mark.parametrize("test_mode", ["val", "test"])
def test_data_manager_parses_each_split_once(clean_scene: Path, method: str, test_mode: str, monkeypatch):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio

    parsed = []
    generate = Nerfstudio._generate_dataparser_outputs

    def counted(self, split="train", **kwargs):
        parsed.append(split)
        return generate(self, split, **kwargs)

    monkeypatch.setattr(Nerfstudio, "_generate_dataparser_outputs", counted)
    datamanager = _method_config(method, clean_scene).pipeline.datamanager.setup(device="cpu", test_mode=test_mode)
    assert sorted(parsed) == sorted(["train", test_mode])  # the check's parse is the one nerfstudio uses
    assert len(datamanager.train_dataset) == 8 and len(datamanager.eval_dataset) == 12
    datamanager.dataparser.get_dataparser_outputs(split="train")  # asked again later: parsed again
    assert sorted(parsed) == sorted(["train", "train", test_mode])


def test_check_can_be_switched_off(scene: Path, no_image_reads):
    Image.new("RGB", (RES + 2, RES)).save(scene / "images" / "train_004.png")
    config = _method_config("difix-splatfacto", scene).pipeline.datamanager
    with pytest.raises(DatasetError, match="train_004"):
        copy.deepcopy(config).setup(device="cpu", test_mode="val")
    config.validate_data = False
    config.setup(device="cpu", test_mode="val")  # nerfstudio caches lazily: no image read yet


def test_inference_mode_does_not_check(scene: Path):
    shutil.rmtree(scene / "images")  # ns-render / ns-export (test_mode "inference") read no image
    _method_config("difix-splatfacto", scene).pipeline.datamanager.setup(device="cpu", test_mode="inference")


# ----------------------------------------------------------------------------------------------------------------
# The real CLI


def test_ns_train_reports_bad_images_quickly_without_traceback(scene: Path, tmp_path: Path):
    _truncate(scene / "images" / "train_001.png")
    Image.new("RGB", (RES + 8, RES + 8)).save(scene / "images" / "eval_006.png")
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("DIFIX_NS_DEBUG", None)
    command = [
        str(BIN / "ns-train"), "difix-splatfacto", f"--data={scene}", f"--output-dir={tmp_path / 'out'}",
        "--experiment-name=e", "--timestamp=t", "--max-num-iterations=5", "--vis=tensorboard",
        "--machine.device-type=cpu",
    ]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "images/train_001.png: truncated" in result.stderr, output[-3000:]
    assert f"images/eval_006.png: size {RES + 8}x{RES + 8}" in result.stderr, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "DIFIX_NS_DEBUG=1" in result.stderr
    # nothing was loaded or trained: no image cache, no step, no checkpoint
    assert "Caching" not in output and "Step (% Done)" not in output
    assert not list((tmp_path / "out").rglob("*.ckpt"))
    print(f"ns-train difix-splatfacto: dataset error after {elapsed:.1f} s")
    assert elapsed < 120.0, elapsed  # ~15 s on a quiet 2-core machine, most of it nerfstudio's imports
