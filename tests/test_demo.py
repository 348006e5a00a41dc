"""`difix-ns demo` (what `make demo` runs) produces its report, per-view results and figure from a real run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from difix_ns.demo import DemoConfig, run_demo


def test_demo_writes_report_results_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    config = DemoConfig(out=tmp_path / "demo", iterations=5, resolution=32)
    report = run_demo(config)

    results = json.loads((config.out / "results.json").read_text())
    assert [r["label"] for r in results] == [run.label for run in config.runs]
    text = report.read_text()
    for r in results:
        assert len(r["views"]) == 12
        assert r["summary"]["far"]["psnr"] > 0.0
        # The table is written from the measured results, not by hand.
        assert f"| {r['label']} | {r['summary']['all']['psnr']:.2f} |" in text
        assert r["seconds_per_iteration"] > 0.0

    figure = Image.open(config.out / "compare.png")
    assert figure.format == "PNG" and figure.width > 300 and figure.height > 100


def test_demo_rejects_an_empty_budget(tmp_path):
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        run_demo(DemoConfig(out=tmp_path, iterations=0))
