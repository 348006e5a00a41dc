"""`difix-ns compress` / `decompress` on a short difix-splatfacto run: the decompressed run folder holds exactly
what the file stores and goes through the real ns-eval and ns-export gaussian-splat; the budget holds on a real
scene; a non-splat run gets a clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from difix_ns.compression import dequantize, pack, unpack
from difix_ns.compression.config_text import pack_config, unpack_config
from tool_runs import run_tool as _run

from difix_ns.compression.command import (
    CompressConfig,
    DecompressConfig,
    compress_run,
    compress_scene,
    decompress_file,
    parse_bits,
    parse_size,
    read_scene,
    relocated_config_yml,
    uncompressed_ply_bytes,
)

ITERATIONS = 12  # the conftest run's
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compressed(splat_run, scene, tmp_path_factory):
    """(file, summary, scratch folder): the scene compressed to half its Gaussians, then the `decompress` job run
    in process (CLI parsing is checked below; the ns-* tools then run as CLIs)."""
    tmp = tmp_path_factory.mktemp("compressed")
    summary = compress_scene(scene, tmp / "scene.dxs", num_gaussians=scene.params["means"].shape[0] // 2)
    DecompressConfig(file=tmp / "scene.dxs", out=tmp / "run").main()
    return tmp / "scene.dxs", summary, tmp


def test_cli_parses_both_jobs():
    import tyro

    from difix_ns.cli import _subcommands

    jobs = tyro.extras.subcommand_type_from_defaults(_subcommands())
    job = tyro.cli(jobs, args=["decompress", "in.dxs", "--out", "run"])
    assert isinstance(job, DecompressConfig) and job.file == Path("in.dxs") and job.out == Path("run")
    job = tyro.cli(jobs, args=["compress", "--load-config", "c.yml", "--budget", "200KB", "--out", "s.dxs"])
    assert isinstance(job, CompressConfig) and parse_size(job.budget) == 200_000 and job.pairs_out is None
    job = tyro.cli(jobs, args=["compress", "--load-config", "c.yml", "--budget", "2KB", "--pairs-out", "p"])
    assert job.pairs_out == Path("p")


def test_decompressed_checkpoint_holds_exactly_what_the_file_stores(compressed, splat_run):
    path, summary, tmp = compressed
    q, metadata = unpack(path.read_bytes(), str(path))
    assert summary["bytes"] == path.stat().st_size and q.num_gaussians == summary["num_gaussians"]
    assert unpack_config(metadata["config_yml_deflated"], metadata["config_dictionary"]) == splat_run.read_text()
    assert len(metadata["config_yml_deflated"]) < 600, "the config costs a few hundred bytes, not kilobytes"
    (checkpoint_path,) = (tmp / "run" / "nerfstudio_models").glob("step-*.ckpt")
    checkpoint = torch.load(checkpoint_path, map_location="cpu")
    assert checkpoint_path.name == f"step-{ITERATIONS - 1:09d}.ckpt" and checkpoint["step"] == ITERATIONS - 1
    for key, value in dequantize(q).items():
        stored = checkpoint["pipeline"][f"_model.gauss_params.{key}"]
        assert stored.dtype == torch.float32
        np.testing.assert_array_equal(stored.numpy(), value)


def test_decompressed_run_goes_through_ns_eval_and_ns_export(compressed):
    path, summary, tmp = compressed
    config = tmp / "run" / "config.yml"
    _run(["ns-eval", f"--load-config={config}", f"--output-path={tmp / 'eval.json'}"], tmp)
    results = json.loads((tmp / "eval.json").read_text())
    assert str(tmp / "run") in results["checkpoint"]
    assert math.isfinite(results["results"]["psnr"]) and results["results"]["psnr"] > 5.0
    _run(["ns-export", "gaussian-splat", f"--load-config={config}", f"--output-dir={tmp / 'export'}"], tmp)
    ply = tmp / "export" / "splat.ply"
    # the PLY of the decompressed run has the size the ratio assumes for its Gaussian count
    assert ply.stat().st_size == uncompressed_ply_bytes(summary["num_gaussians"], 3)


def test_budgets_on_a_real_run_are_hard_caps(scene, tmp_path):
    n = scene.params["means"].shape[0]
    smallest = None
    for budget in (2000, 5000, 10000, 20000, 10**8):
        try:
            summary = compress_scene(scene, tmp_path / f"{budget}.dxs", budget_bytes=budget)
        except ValueError as error:
            assert "(header + one Gaussian)" in str(error) and smallest is None
            smallest = int(str(error).split("stored in: ")[1].split()[0])
            assert smallest > budget
            continue
        assert summary["bytes"] == (tmp_path / f"{budget}.dxs").stat().st_size <= budget
        assert summary["ratio"] == summary["ply_bytes"] / summary["bytes"]
        assert summary["ply_bytes"] == uncompressed_ply_bytes(n, 3)
    assert summary["num_gaussians"] == n, "an ample budget keeps every Gaussian"
    with pytest.raises(ValueError, match="below the smallest file"):
        compress_scene(scene, tmp_path / "tiny.dxs", budget_bytes=100)


def test_a_non_splat_run_is_refused(tmp_path):
    import copy

    import yaml

    from difix_ns.method_configs.difix_nerfacto import difix_nerfacto

    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.dump(copy.deepcopy(difix_nerfacto.config)))
    with pytest.raises(ValueError, match="is not a splat method"):
        CompressConfig(load_config=config_path, out=tmp_path / "x.dxs", budget="1MB").main()
    assert not (tmp_path / "x.dxs").exists()
    with pytest.raises(ValueError, match="no such config.yml"):
        compress_run(tmp_path / "missing.yml", tmp_path / "x.dxs", budget_bytes=10**6)
    with pytest.raises(ValueError, match="not both"):  # refused before the scene is read
        compress_run(tmp_path / "missing.yml", tmp_path / "x.dxs", budget_bytes=10**6, finetune_steps=5,
                     finetune_seconds=5.0)  # fmt: skip


def test_under_a_budget_the_bits_are_chosen_by_rendered_fidelity(scene, tmp_path):
    """Each allocation of the ladder is fitted to the budget and scored by its renders against the uncompressed
    scene's; the file holds the best one, and its fidelity is at least the fixed default's."""
    from difix_ns.compression.codec import BITS_LADDER, DEFAULT_BITS
    from difix_ns.compression.command import _calibration_cameras, _fidelity

    budget = uncompressed_ply_bytes(scene.params["means"].shape[0], 3) // 30
    chosen = compress_scene(scene, tmp_path / "auto.dxs", budget_bytes=budget)
    fixed = compress_scene(scene, tmp_path / "fixed.dxs", budget_bytes=budget, bits=dict(DEFAULT_BITS))
    assert chosen["bytes"] <= budget and fixed["bytes"] <= budget
    assert fixed["bits"] == DEFAULT_BITS and fixed["bit_scores"] == []
    tried = chosen["bit_scores"]
    assert [t[0] for t in tried] == list(BITS_LADDER[: len(tried)]) and len(tried) >= 3
    best = max(tried, key=lambda t: t[2])
    assert chosen["bits"] == best[0] and chosen["num_gaussians"] == best[1]
    q, _ = unpack((tmp_path / "auto.dxs").read_bytes(), "auto.dxs")
    assert q.bits == chosen["bits"], "the file says which bits it holds"
    score, _ = _fidelity(scene, _calibration_cameras(scene))
    assert score(dequantize(q)) == pytest.approx(best[2], abs=1e-6)
    default, _ = unpack((tmp_path / "fixed.dxs").read_bytes(), "fixed.dxs")
    assert best[2] >= score(dequantize(default)) - 1e-6


def test_the_config_dictionary_is_frozen_and_bad_config_bytes_are_named(splat_run, compressed, tmp_path):
    import hashlib

    dictionary = Path(pack_config.__code__.co_filename).with_name("config_dictionary_1.yml")
    assert hashlib.sha256(dictionary.read_bytes()).hexdigest() == (
        "495671acb1c331f71bac78b2022e82d195b50c5c3fd9c6136aae264297abd4b0"
    ), "a released dictionary never changes: add config_dictionary_2.yml instead"
    number, data = pack_config(splat_run.read_text())
    with pytest.raises(ValueError, match="config dictionary 9 is unknown"):
        unpack_config(data, 9, "x.dxs")
    with pytest.raises(ValueError, match="x.dxs: the embedded config.yml is unreadable"):
        unpack_config(data[: len(data) // 2], number, "x.dxs")
    # a file of an earlier version, config.yml stored as text, still decompresses
    q, _ = unpack(compressed[0].read_bytes())
    (tmp_path / "old.dxs").write_bytes(pack(q, {"config_yml": splat_run.read_text(), "step": ITERATIONS - 1}))
    config_path, _ = decompress_file(tmp_path / "old.dxs", tmp_path / "old")
    assert config_path.read_text() == relocated_config_yml(splat_run.read_text(), tmp_path / "old")


def test_bits_parse_as_auto_or_five_numbers():
    assert parse_bits("auto") is None
    assert parse_bits("12,5,5,5,5") == {"means": 12, "scales": 5, "quats": 5, "opacities": 5, "features_dc": 5}
    with pytest.raises(ValueError, match="bits must be auto or five integers"):
        parse_bits("12,5")
    with pytest.raises(ValueError, match="bits of scales must be an integer in 1..8"):
        parse_bits("12,9,5,5,5")


def test_sizes_parse_with_units():
    assert parse_size("200KB") == 200_000 and parse_size("64KiB") == 65_536 and parse_size("1.5MB") == 1_500_000
    with pytest.raises(ValueError, match="budget must look like"):
        parse_size("lots")


def test_the_embedded_config_is_relocated_without_building_anything(splat_run, tmp_path):
    import yaml

    from difix_ns.compression.command import relocated_config_yml

    text = relocated_config_yml(splat_run.read_text(), tmp_path / "run")
    config, original = (yaml.load(t, Loader=yaml.Loader) for t in (text, splat_run.read_text()))
    models = (tmp_path / "run" / "nerfstudio_models").resolve()
    assert config.output_dir == (tmp_path / "run").resolve() and config.load_dir == config.relative_model_dir == models
    assert config.load_step is None
    assert config.pipeline.model == original.pipeline.model and config.data == original.data
    with pytest.raises(ValueError, match="x.dxs: the embedded config.yml is unreadable"):
        relocated_config_yml("a: [unclosed", tmp_path, "x.dxs")
    with pytest.raises(ValueError, match="not a run config"):
        relocated_config_yml("- a list", tmp_path, "x.dxs")
