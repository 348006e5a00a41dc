"""benchmarks/progressive_schedule.py on a real capture's benchmark: what it links, copies and configures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "progressive_schedule.py"


@pytest.fixture(scope="module")
def schedule():
    spec = importlib.util.spec_from_file_location("progressive_schedule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _baseline(root: Path) -> Path:
    baseline = root / "real_fruit"
    for shared in ("splatfacto", "self_fixer"):
        (baseline / "runs" / "fruit" / shared).mkdir(parents=True)
    (baseline / "covis" / "fruit").mkdir(parents=True)
    (baseline / "covis" / "fruit" / "covis.json").write_text('{"coverage": 0.8}')
    config = {
        "data": "../shared/data/real/fruit", "downscale": 12, "covis": True, "covis_iters": 500, "seeds": [0, 1, 2],
        "resolution": 96, "train_every": 8, "train_views": None, "iters": 1000, "self_fixer_steps": 400,
        "self_fixer_seconds": 90.0, "self_fixer_iters": None, "fixer_method_args": "",
    }  # fmt: skip
    (baseline / "results.json").write_text(json.dumps({"config": config, "scenes": [{"name": "fruit"}], "runs": []}))
    return baseline


def test_a_variant_shares_the_baselines_runs_and_copies_its_covisibility(schedule, tmp_path):
    baseline, folder = _baseline(tmp_path), tmp_path / "work" / "seed7"
    results = schedule.link_baseline(baseline, folder)
    for shared in ("splatfacto", "self_fixer"):
        link = folder / "runs" / "fruit" / shared
        assert link.is_symlink() and link.resolve() == (baseline / "runs" / "fruit" / shared).resolve()
    copy = folder / "covis" / "fruit"
    assert copy.is_dir() and not copy.is_symlink(), "the benchmark rewrites covis.json: a link changes the baseline"
    assert (copy / "covis.json").read_text() == '{"coverage": 0.8}'
    assert schedule.link_baseline(baseline, folder) == results, "a second call (a resumed variant) changes nothing"

    config = schedule.baseline_config(results, folder, "--pipeline.progressive.step-spacings 2.0")
    expected = (Path(results["config"]["data"]), 12, 8, 1000)
    assert (config.data, config.downscale, config.train_every, config.iters) == expected
    assert config.out == folder and config.fixer_method_args == "--pipeline.progressive.step-spacings 2.0"
    assert (config.self_fixer_steps, config.self_fixer_seconds) == (400, 90.0), "the linked fixers' budget: kept"


def test_a_seeded_variant_links_the_splatfacto_run_of_its_own_seed(schedule, tmp_path):
    baseline, folder = _baseline(tmp_path), tmp_path / "work" / "default_seed7"
    schedule.link_baseline(baseline, folder)  # as a variant folder made before the seeds had their own splatfacto
    seeded = tmp_path / "work" / "splatfacto_seed7"
    (seeded / "runs" / "fruit" / "splatfacto").mkdir(parents=True)
    schedule.link_baseline(baseline, folder, splatfacto_runs=seeded)
    runs = folder / "runs" / "fruit"
    assert (runs / "splatfacto").resolve() == (seeded / "runs" / "fruit" / "splatfacto").resolve()
    assert (runs / "self_fixer").resolve() == (baseline / "runs" / "fruit" / "self_fixer").resolve()
    with pytest.raises(ValueError, match="splatfacto is missing"):
        schedule.link_baseline(baseline, folder, splatfacto_runs=tmp_path / "work" / "splatfacto_seed11")


def test_a_baseline_without_its_runs_is_refused(schedule, tmp_path):
    baseline = _baseline(tmp_path)
    (baseline / "runs" / "fruit" / "self_fixer").rmdir()
    with pytest.raises(ValueError, match="self_fixer is missing"):
        schedule.link_baseline(baseline, tmp_path / "work")
