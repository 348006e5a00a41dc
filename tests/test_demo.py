"""`difix-ns demo` (what `make demo` runs) produces its report, per-view results and figure from a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from difix_ns.benchmark.command import BenchmarkConfig, run_benchmark
from difix_ns.demo import DEMO_METHODS, DemoConfig, run_demo


def test_demo_writes_report_results_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    config = DemoConfig(out=tmp_path / "demo", iterations=8, resolution=32, self_fixer_steps=10)
    report = run_demo(config)

    results = json.loads((config.out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == list(DEMO_METHODS)
    text = report.read_text()
    assert "The self fixers trained 10 NAFNet steps each (no time limit)." in text
    for run in results["runs"]:
        assert len(run["views"]) == 12
        assert run["metrics"]["far"]["psnr"] > 0.0
        # The table is written from the measured results, not by hand.
        assert f"| {run['method']} | {run['metrics']['all']['psnr']:.2f} |" in text
        assert run["seconds_per_iteration"] > 0.0

    # One self fixer per scene, trained on the training views and shared by the difix runs.
    fixer_seconds = {r["method"]: r["fixer_seconds"] for r in results["runs"]}
    assert fixer_seconds["splatfacto"] == 0.0
    assert fixer_seconds["difix-splatfacto"] == fixer_seconds["difix-splatfacto+post"] > 0.0
    shared = (config.out / "runs" / "synth0" / "self_fixer").resolve()
    assert (shared / "train").is_dir()
    split = results["scenes"][0]["split"]
    manifest = (shared / "pairs" / "manifest.jsonl").read_text()
    assert manifest.strip(), "the shared fixer was trained on pairs"
    leaked = [e["file_path"] for e in split["eval"] if Path(e["file_path"]).name in manifest]
    assert not leaked, f"evaluation views reached the fixer's pairs: {leaked}"
    run_config = (config.out / "runs" / "synth0" / "difix-splatfacto").glob("**/config.yml")
    assert str(shared) in next(run_config).read_text()

    # Resuming the benchmark keeps the fixer the runs used (no further training) and its reported time.
    weights = {p: p.read_bytes() for p in (shared / "train" / "fixer").iterdir()}
    again = run_benchmark(
        BenchmarkConfig(
            seeds=(0,), resolution=32, iters=8, methods=DEMO_METHODS, out=config.out, self_fixer_steps=10
        )
    )
    assert {p: p.read_bytes() for p in (shared / "train" / "fixer").iterdir()} == weights
    assert [r["fixer_seconds"] for r in again["runs"]] == [r["fixer_seconds"] for r in results["runs"]]

    figure = Image.open(config.out / "compare.png")
    assert figure.format == "PNG" and figure.width > 300 and figure.height > 100


def test_demo_rejects_an_empty_budget(tmp_path):
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        run_demo(DemoConfig(out=tmp_path, iterations=0))
