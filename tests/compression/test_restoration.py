"""Restoration of compressed scenes: pairs from the real codec at training and novel cameras, a restorer trained on
them as the post-processing fixer of a decompressed run (through the real ns-eval), generic restorers that never
see the scene they restore."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tool_runs import run_tool

from difix_ns.compression.command import DecompressConfig, compress_scene, with_restorer
from difix_ns.compression.restoration import (
    between_cameras,
    render_scene,
    restorer_manifests,
    write_manifest,
    write_restoration_pairs,
)

pytestmark = pytest.mark.slow


def _line_of_cameras(count: int):
    from nerfstudio.cameras.cameras import Cameras

    c2w = torch.eye(4)[:3].repeat(count, 1, 1)
    c2w[:, 0, 3] = torch.arange(count, dtype=torch.float32)
    return Cameras(camera_to_worlds=c2w, fx=torch.arange(1.0, count + 1)[:, None] * 10, fy=50.0, cx=16.0, cy=12.0,
                   width=32, height=24)  # fmt: skip


def test_novel_cameras_lie_between_a_camera_and_a_neighbour():
    cameras = _line_of_cameras(5)
    novel = between_cameras(cameras, per_view=3, seed=1, neighbours=2)
    assert novel.shape[0] == 15
    x = novel.camera_to_worlds[:, 0, 3].reshape(5, 3)
    for i in range(5):
        gaps = (x[i] - i).abs()
        assert torch.all((gaps >= 0.2 - 1e-5) & (gaps <= 1.6 + 1e-5)), "20-80 % of the way to a camera <= 2 away"
        assert torch.all(novel.fx.reshape(5, 3)[i] == cameras.fx[i]), "intrinsics of the camera it starts from"
    rotation = novel.camera_to_worlds[:, :3, :3]
    torch.testing.assert_close(rotation, torch.eye(3).expand_as(rotation), atol=1e-5, rtol=0)
    assert between_cameras(cameras, per_view=0) is None
    with pytest.raises(ValueError, match="novel views per training view"):
        between_cameras(cameras, per_view=-1)


@pytest.fixture(scope="module")
def pairs(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("restoration_pairs")
    records = write_restoration_pairs(scene, out, [10.0, 40.0], novel_per_view=1, unit="s", source_scene="sceneA")
    return out, records, write_manifest(records, out)


def test_pairs_are_the_decoded_file_against_the_full_scene(scene, pairs, tmp_path):
    out, records, _ = pairs
    views = len(scene.pipeline.datamanager.train_dataset)
    assert len(records) == 3 * 2 * views, "clean + 2 ratios, each at the training + 1 novel camera per view"
    assert all(r["degraded"] == r["clean"] for r in records if r["ratio"] == 1.0)
    for ratio in (10.0, 40.0):
        file = compress_scene(scene, tmp_path / f"{ratio:g}.dxs", budget_bytes=_budget(scene, ratio))
        mine = [r for r in records if r["ratio"] == ratio]
        assert {r["bytes"] for r in mine} == {file["bytes"]}, "pairs come from exactly the file compress writes"
        assert {r["num_gaussians"] for r in mine} == {file["num_gaussians"]}
    # the benchmark hands over the files it wrote: decoded, not compressed again, and the same pairs
    again = write_restoration_pairs(scene, tmp_path / "again", [40.0], novel_per_view=1, unit="s", clean_pairs=False,
                                    compressed={40.0: tmp_path / "40.dxs"})  # fmt: skip
    before = {r["id"]: r for r in records if r["ratio"] == 40.0}
    assert len(again) == len(before)
    for record in again:
        old = before[record["id"]]
        assert record["bytes"] == old["bytes"]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / record["degraded"])),
                              np.asarray(Image.open(out / old["degraded"])))  # fmt: skip
    clean = render_scene(scene.pipeline.model, None, scene.pipeline.datamanager.train_dataset.cameras)
    first = next(r for r in records if r["camera"] == "train")
    saved = np.asarray(Image.open(out / first["clean"]), np.float64) / 255.0
    assert np.abs(saved - clean[0]).max() <= 0.5 / 255 + 1e-6, "clean = the uncompressed scene's render"
    mean = {ratio: np.mean([r["psnr_degraded"] for r in records if r["ratio"] == ratio]) for ratio in (10.0, 40.0)}
    assert mean[40.0] < mean[10.0], "a smaller file degrades more"


def _budget(scene, ratio: float) -> int:
    from difix_ns.compression.command import uncompressed_ply_bytes

    return int(uncompressed_ply_bytes(scene.params["means"].shape[0], 3) / ratio)


def test_generic_restorer_manifests_never_hold_the_scene(tmp_path):
    from difix_ns.training.pairs import load_pairs

    manifests = {}
    for name in ("a", "b", "c"):
        folder = tmp_path / name
        (folder / "p").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "p" / "x.png")
        record = {"id": name, "degraded": "p/x.png", "clean": "p/x.png", "reference": "p/x.png",
                  "source_scene": name, "strategy": "compression"}  # fmt: skip
        manifests[name] = write_manifest([record], folder)
    generic = restorer_manifests(manifests, "b", "generic")
    assert sorted(generic) == sorted([manifests["a"], manifests["c"]])
    assert {r["source_scene"] for r in load_pairs(generic)} == {"a", "c"}, "what train-fixer reads"
    assert restorer_manifests(manifests, "b", "per-scene") == [manifests["b"]]
    with pytest.raises(ValueError, match="no other scene"):
        restorer_manifests({"b": manifests["b"]}, "b", "generic")
    with pytest.raises(ValueError, match="mode"):
        restorer_manifests(manifests, "b", "both")


def test_a_restorer_post_processes_the_decompressed_run_in_ns_eval(scene, pairs, tmp_path):
    from difix_ns.fixers.config import build_fixer
    from difix_ns.fixers.nafnet import NAFNetFixer
    from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

    _, _, manifest = pairs
    restorer = train_fixer(TrainFixerConfig(manifests=(manifest,), out=tmp_path / "restorer", steps=3, batch_size=2,
                                            crop_size=16, perceptual="off", val_every=3, save_every=10**6))  # fmt: skip
    compress_scene(scene, tmp_path / "scene.dxs", budget_bytes=_budget(scene, 20.0))
    with pytest.raises(Exception, match="not found"):
        DecompressConfig(file=tmp_path / "scene.dxs", out=tmp_path / "bad", restorer=tmp_path / "missing").main()
    assert not (tmp_path / "bad").exists(), "a bad restorer folder is refused before anything is written"
    DecompressConfig(file=tmp_path / "scene.dxs", out=tmp_path / "run", restorer=restorer).main()
    import yaml

    config = yaml.load((tmp_path / "run" / "config.yml").read_text(), Loader=yaml.Loader)
    assert isinstance(build_fixer(config.pipeline.model.fixer), NAFNetFixer), "loads through the Fixer interface"
    run_tool(["ns-eval", f"--load-config={tmp_path / 'run' / 'config.yml'}", f"--output-path={tmp_path / 'e.json'}"],
             tmp_path)  # fmt: skip
    results = json.loads((tmp_path / "e.json").read_text())["results"]
    assert math.isfinite(results["psnr_fixed"]) and math.isfinite(results["psnr"])


def test_compress_chooses_the_restorer_strength_and_decompress_applies_it(scene, pairs, tmp_path):
    """`compress --restorer`: the strength with the best calibration PSNR is stored in the file (which still fits
    the budget); `decompress --restorer` uses it unless told otherwise."""
    import yaml

    from difix_ns.compression.command import STRENGTHS, decompress_file
    from difix_ns.compression.container import unpack
    from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

    _, _, manifest = pairs
    restorer = train_fixer(TrainFixerConfig(manifests=(manifest,), out=tmp_path / "restorer", steps=2, batch_size=2,
                                            crop_size=16, perceptual="off", val_every=2, save_every=10**6))  # fmt: skip
    budget = _budget(scene, 20.0)
    summary = compress_scene(scene, tmp_path / "scene.dxs", budget_bytes=budget, restorer=restorer)
    scores = summary["restorer_scores"]
    assert sorted(scores) == sorted(STRENGTHS) and summary["restorer_strength"] in STRENGTHS
    assert scores[summary["restorer_strength"]] == max(scores.values())
    data = (tmp_path / "scene.dxs").read_bytes()
    assert len(data) == summary["bytes"] <= budget
    assert unpack(data, "scene.dxs")[1]["restorer_strength"] == summary["restorer_strength"]

    def strength(folder, **kwargs):
        config_path, _ = decompress_file(tmp_path / "scene.dxs", tmp_path / folder, restorer, **kwargs)
        return yaml.load(config_path.read_text(), Loader=yaml.Loader).pipeline.model.postprocess_strength

    assert strength("stored") == summary["restorer_strength"]
    assert strength("half", strength=0.5) == 0.5
    with pytest.raises(ValueError, match=r"restorer strength must be in \[0, 1\]"):
        strength("bad", strength=2.0)
    with pytest.raises(ValueError, match="needs a restorer"):
        decompress_file(tmp_path / "scene.dxs", tmp_path / "none", None, strength=0.5)
    assert not (tmp_path / "none").exists()


def test_a_plain_splatfacto_run_becomes_a_fixing_run_with_its_settings(tmp_path):
    import copy

    from nerfstudio.configs.method_configs import method_configs

    from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer
    from difix_ns.models.difix_splatfacto import DifixSplatfactoModelConfig

    config = copy.deepcopy(method_configs["splatfacto"])
    config.pipeline.model.sh_degree, config.pipeline.model.background_color = 1, "white"
    config.pipeline.datamanager.data = tmp_path / "data"
    NAFNetFixer(NAFNet(width=8)).save_pretrained(tmp_path / "restorer")
    fixing = with_restorer(config, tmp_path / "restorer")
    model = fixing.pipeline.model
    assert isinstance(model, DifixSplatfactoModelConfig) and fixing.method_name == "difix-splatfacto"
    assert (model.sh_degree, model.background_color) == (1, "white")
    assert fixing.pipeline.datamanager.data == tmp_path / "data"
    assert (model.postprocess, model.postprocess_blend, model.postprocess_reference) == (True, "none", "none")
    assert Path(model.fixer.checkpoint) == (tmp_path / "restorer").resolve()


def test_compress_writes_the_pairs_of_exactly_its_file(splat_run, scene, tmp_path):
    from difix_ns.compression.command import compress_run
    from difix_ns.data.curate import read_manifest

    n = scene.params["means"].shape[0]
    summary = compress_run(splat_run, tmp_path / "s.dxs", num_gaussians=n // 3, pairs_out=tmp_path / "pairs")
    records = read_manifest(Path(summary["pairs_manifest"]))
    views = len(scene.pipeline.datamanager.train_dataset)
    assert len(records) == 3 * views, "the training cameras + 2 novel ones per view, no clean pairs"
    assert {r["bytes"] for r in records} == {summary["bytes"]} and {r["num_gaussians"] for r in records} == {n // 3}
    assert all(r["ratio"] == pytest.approx(summary["ratio"]) for r in records)
    # the same pairs as the file decoded by the pair writer itself
    again = write_restoration_pairs(scene, tmp_path / "again", [records[0]["ratio"]], unit="s", clean_pairs=False,
                                    compressed={records[0]["ratio"]: tmp_path / "s.dxs"})  # fmt: skip
    for mine, theirs in zip(records, again):
        assert np.array_equal(np.asarray(Image.open(mine["degraded"])),
                              np.asarray(Image.open(tmp_path / "again" / theirs["degraded"])))  # fmt: skip
