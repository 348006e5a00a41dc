"""`difix-ns curate` and the self-trained fixer on a tiny synthetic scene whose evaluation images are corrupted or
deleted and one of whose training images is corrupted and one missing: triplets of matching sizes, a valid
manifest, bad training images reported and skipped, evaluation images never opened, resume keeps finished units."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_ns.data.curate import CurateConfig, curate, read_manifest
from difix_ns.training.self_fixer import SelfFixerConfig, train_self_fixer

ITERATIONS = 4


@pytest.fixture(scope="module")
def damaged_scene(synth_scene, tmp_path_factory) -> Path:
    scene = tmp_path_factory.mktemp("damaged") / "scene"
    shutil.copytree(synth_scene, scene)
    meta = json.loads((scene / "transforms.json").read_text())
    evals = sorted(set(meta["val_filenames"]) | set(meta["test_filenames"]))
    for name in evals[1:]:
        (scene / name).write_bytes(b"not a png: evaluation images must never be read")
    (scene / evals[0]).unlink()
    (scene / "images/train_003.png").write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    (scene / "images/train_006.png").unlink()
    return scene


@pytest.fixture(scope="module")
def self_fixer_run(damaged_scene, tmp_path_factory):
    """train_self_fixer on the damaged scene, recording every file PIL opens."""
    out = tmp_path_factory.mktemp("self_fixer")
    opened: list = []
    original = Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return original(fp, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(Image, "open", recording_open)
    try:
        config = SelfFixerConfig(
            strategies=("leave-out", "underfit"), iterations=ITERATIONS, num_folds=2, steps=6, max_seconds=60,
            nafnet_width=4, batch_size=2, crop_size=32, perceptual="off",
        )  # fmt: skip
        fixer_dir = train_self_fixer(damaged_scene, out, config)
    finally:
        mp.undo()
    return out, fixer_dir, opened


def test_triplets_have_matching_sizes_and_a_valid_manifest(self_fixer_run, damaged_scene):
    out, _, _ = self_fixer_run
    manifest = out / "pairs/manifest.jsonl"
    records = read_manifest(manifest)
    usable = [f"images/train_{i:03d}.png" for i in (0, 1, 2, 4, 5, 7)]
    by_strategy = {s: [r for r in records if r["strategy"] == s] for s in ("leave-out", "underfit")}
    assert sorted(r["view"] for r in by_strategy["leave-out"]) == usable, "every usable view left out exactly once"
    assert len(by_strategy["underfit"]) == 3 * len(usable), "3 underfit checkpoints (25/50/75 %) x views"
    assert len({r["step"] for r in by_strategy["underfit"]}) == 3
    # each fold also renders its own training views at 50 % and 100 % of its budget (SelfFixerConfig default)
    own = [r for r in records if r["strategy"] == "leave-out-own"]
    for unit in {r["unit"] for r in by_strategy["leave-out"]}:
        left_out = {r["view"] for r in by_strategy["leave-out"] if r["unit"] == unit}
        mine = [r for r in own if r["unit"] == unit]
        assert {r["view"] for r in mine} == set(usable) - left_out, "a fold's own views are its training views"
        assert len(mine) == 2 * len(set(usable) - left_out) and len({r["step"] for r in mine}) == 2
    for r in records:
        assert r["source_scene"] == str(damaged_scene.resolve())
        assert r["reference_view"] in usable and r["reference_view"] != r["view"]
        assert r["pose_distance"]["distance"] > 0
        sizes = {Image.open(r[k]).size for k in ("degraded", "clean", "reference")}
        assert sizes == {(r["width"], r["height"])} == {(48, 48)}
        clean = np.asarray(Image.open(r["clean"]))
        photo = np.asarray(Image.open(damaged_scene / r["view"]).convert("RGB"))
        np.testing.assert_array_equal(clean, photo)  # clean = the real photo of the left-out view
    line = json.loads(manifest.read_text().splitlines()[0])
    assert not Path(line["degraded"]).is_absolute(), "manifest paths are relative to its folder"


def test_pairs_carry_warped_references_from_their_own_training_views_only(self_fixer_run, damaged_scene):
    # SelfFixerConfig's default warped_references=2: each pair has 2 training photos of its unit's model warped
    # into the target (never the target itself, never a left-out view of its fold, never an evaluation view)
    out, fixer_dir, _ = self_fixer_run
    records = read_manifest(out / "pairs/manifest.jsonl")
    meta = json.loads((damaged_scene / "transforms.json").read_text())
    eval_names = {Path(n).name for n in meta["val_filenames"] + meta["test_filenames"]}
    for r in records:
        assert len(r["warped"]) == len(r["warped_mask"]) == len(r["warped_views"]) == 2
        unit_targets = {
            Path(x["view"]).name for x in records if x["unit"] == r["unit"] and x["strategy"] == "leave-out"
        }
        assert Path(r["view"]).name not in r["warped_views"] and not set(r["warped_views"]) & eval_names
        if r["strategy"] == "leave-out":
            assert not set(r["warped_views"]) & unit_targets, "a leave-out pair warps only its fold's training views"
        for view, mask in zip(r["warped"], r["warped_mask"]):
            assert Image.open(view).size == Image.open(mask).size == (48, 48)
            assert set(np.unique(np.asarray(Image.open(mask)))) <= {0, 255}
    assert json.loads((fixer_dir / "config.json").read_text())["warped_references"] == 2


def test_the_self_fixer_is_validated_per_strategy(self_fixer_run):
    """The gates of a run judge the progressive update on held-out-view pairs and post-processing on all pairs."""
    from difix_ns.training.self_fixer import NOVEL_VIEW_STRATEGIES, self_fixer_validation

    _, fixer_dir, _ = self_fixer_run
    summary = json.loads((fixer_dir.parent / "summary.json").read_text())
    by_strategy = summary["validation_by_strategy"]
    assert sum(v["pairs"] for v in by_strategy.values()) == summary["val_pairs"] > 0
    # the same final weights: the per-strategy means weigh back to the overall validation
    overall = sum(v["psnr"] * v["pairs"] for v in by_strategy.values()) / summary["val_pairs"]
    assert overall == pytest.approx(summary["validation"]["psnr"], abs=1e-4)
    assert self_fixer_validation(fixer_dir) == (summary["validation"]["psnr"], summary["validation"]["psnr_degraded"])
    novel = self_fixer_validation(fixer_dir, NOVEL_VIEW_STRATEGIES)
    if "leave-out" in by_strategy:
        assert novel == pytest.approx((by_strategy["leave-out"]["psnr"], by_strategy["leave-out"]["psnr_degraded"]))
    else:  # no held-out-view pair among the validation pairs: all of them judge
        assert novel == self_fixer_validation(fixer_dir)


def test_corrupt_and_missing_training_images_are_reported_and_skipped(self_fixer_run):
    out, _, _ = self_fixer_run
    report = json.loads((out / "pairs/report.json").read_text())
    assert set(report["skipped_images"]) == {"images/train_003.png", "images/train_006.png"}
    assert report["skipped_images"]["images/train_006.png"] == "missing"
    assert report["skipped_images"]["images/train_003.png"].startswith("unreadable")
    assert report["disk_mb"] > 0


def test_evaluation_images_never_reach_the_fixer(self_fixer_run, damaged_scene):
    out, fixer_dir, opened = self_fixer_run
    meta = json.loads((damaged_scene / "transforms.json").read_text())
    eval_names = {Path(n).name for n in meta["val_filenames"] + meta["test_filenames"]}
    assert opened, "the recording hook saw the images being read"
    assert not [p for p in opened if Path(p).name in eval_names], "an evaluation image was opened"
    text = (out / "pairs/manifest.jsonl").read_text()
    assert not [n for n in eval_names if n in text]
    assert (fixer_dir / "config.json").is_file()
    from difix_ns.fixers.config import FixerConfig

    fixer = FixerConfig(backend="nafnet", checkpoint=str(fixer_dir), device="cpu").setup()
    assert fixer.fix(np_to_tensor(np.zeros((48, 48, 3)))).shape == (1, 3, 48, 48)


def np_to_tensor(array):
    import torch

    return torch.from_numpy(array).float().permute(2, 0, 1)[None]


def test_resume_keeps_finished_units_and_disk_bound_stops_new_ones(self_fixer_run, damaged_scene):
    out, _, _ = self_fixer_run
    before = (out / "pairs/manifest.jsonl").read_text()
    again = curate(CurateConfig(data=damaged_scene, out=out / "pairs", strategies=("leave-out", "underfit"),
                                iterations=ITERATIONS, num_folds=2))  # fmt: skip
    assert again.units_run == [] and len(again.units_resumed) == 3
    assert (out / "pairs/manifest.jsonl").read_text() == before
    # each unit keeps what making it took, so a resume still reports it
    made = json.loads((out / "pairs/report.json").read_text())["unit_seconds"]
    assert sorted(made) == sorted(again.units_resumed) and all(s > 0 for s in made.values())
    bounded = curate(CurateConfig(data=damaged_scene, out=out / "pairs", strategies=("leave-out",), num_folds=3,
                                  iterations=ITERATIONS, max_disk_mb=1e-6))  # fmt: skip
    assert bounded.stopped_for_disk and bounded.units_run == []


def test_bad_options_are_refused(synth_scene, tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        CurateConfig(data=synth_scene, out=tmp_path, strategies=("loop",)).validate()
    with pytest.raises(ValueError, match="transforms.json"):
        CurateConfig(data=tmp_path, out=tmp_path / "o").validate()


def test_compression_pairs_come_from_the_real_codec_at_each_ratio(self_fixer_run, damaged_scene):
    out, _, _ = self_fixer_run
    result = curate(CurateConfig(data=damaged_scene, out=out / "compression", strategies=("compression",),
                                 iterations=ITERATIONS, compression_ratios=(20.0, 80.0),
                                 compression_novel_views=1))  # fmt: skip
    records = [r for r in read_manifest(result.manifest) if r["strategy"] == "compression"]
    train = [r for r in records if r["camera"] == "train"]
    assert len(train) == 3 * 6 and len(records) == 2 * len(train), "each level: 6 training + 6 novel cameras"
    clean = [r for r in records if r["ratio"] == 1.0]
    assert len(clean) == 12 and all(r["degraded"] == r["clean"] for r in clean), "clean pairs: the render itself"
    by_ratio = {ratio: [r for r in records if r["ratio"] == ratio] for ratio in (20.0, 80.0)}
    assert by_ratio[80.0][0]["bytes"] < by_ratio[20.0][0]["bytes"]
    assert by_ratio[80.0][0]["num_gaussians"] < by_ratio[20.0][0]["num_gaussians"]
    for r in records:
        degraded, clean = (np.asarray(Image.open(r[k]), dtype=np.float64) for k in ("degraded", "clean"))
        assert degraded.shape == clean.shape == (48, 48, 3)
    mean_psnr = {ratio: np.mean([r["psnr_degraded"] for r in rs]) for ratio, rs in by_ratio.items()}
    assert mean_psnr[80.0] < mean_psnr[20.0], "a smaller budget degrades more"


def test_cross_reference_leaves_out_each_camera_group(synth_scene, tmp_path):
    from rich.console import Console

    from difix_ns.data.curate import _plan
    from difix_ns.data.scene_io import read_training_views

    scene = tmp_path / "grouped"
    shutil.copytree(synth_scene, scene)
    meta = json.loads((scene / "transforms.json").read_text())
    for i, frame in enumerate(meta["frames"]):
        frame["camera_group"] = "left" if i % 2 else "right"
    (scene / "transforms.json").write_text(json.dumps(meta))
    views = read_training_views(scene)
    units = _plan(CurateConfig(data=scene, strategies=("cross-reference",)), views, Console())
    assert [u.name for u in units] == ["cross-reference-left", "cross-reference-right"]
    for unit in units:
        assert not set(unit.targets) & set(unit.train)
        assert sorted(unit.targets + unit.train) == sorted(views.usable)
    assert all(not name.startswith("images/eval") for u in units for name in u.train + u.targets)


def test_derived_dataset_of_absolute_paths_links_inside_and_leaves_the_source_alone(synth_scene, tmp_path):
    # The benchmark's split datasets list images by absolute path; a derived dataset must not write there.
    from difix_ns.data.scene_io import write_derived_dataset

    meta = json.loads((synth_scene / "transforms.json").read_text())
    frames = {
        str(synth_scene / f["file_path"]): {**f, "file_path": str(synth_scene / f["file_path"])} for f in meta["frames"]
    }
    names = sorted(n for n in frames if "/train_" in n)
    before = {n: Path(n).read_bytes() for n in names}
    source = {"fl_x": meta["fl_x"], "frames": list(frames.values())}
    folder = write_derived_dataset(tmp_path, source, tmp_path / "derived", names[:-1], names[-1:])
    written = json.loads((folder / "transforms.json").read_text())
    for frame in written["frames"]:
        assert not Path(frame["file_path"]).is_absolute()
        assert (folder / frame["file_path"]).resolve() in {Path(n).resolve() for n in names}
    assert all(not Path(n).is_symlink() and Path(n).read_bytes() == before[n] for n in names)
