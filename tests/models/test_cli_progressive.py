"""A difix-splatfacto run with progressive updates and post-processing through the real tools: ns-eval (raw and
_fixed metrics) and ns-export gaussian-splat as CLIs, ns-render's dataset command in process (rgb_fixed).
ns-train itself, with --load-dir, is covered for both methods in tests/method_configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _run(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(cwd / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=cwd)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def run(trained_splatfacto, tmp_path_factory):
    """(run folder, scratch folder) of the shared in-process run (its config.yml is what ns-train writes)."""
    return trained_splatfacto["run"], tmp_path_factory.mktemp("cli_progressive")


def test_ns_eval_reports_raw_and_fixed_metrics(run):
    folder, tmp = run
    output = tmp / "eval.json"
    _run(["ns-eval", f"--load-config={folder / 'config.yml'}", f"--output-path={output}"], tmp)
    results = json.loads(output.read_text())["results"]
    for key in ("psnr", "ssim"):
        assert math.isfinite(results[key]) and math.isfinite(results[f"{key}_fixed"])
    assert results["psnr"] != results["psnr_fixed"], "an untrained NAFNet changes the images"


def test_ns_render_renders_rgb_fixed(run, synth_scene):
    """ns-render's own `dataset` command, in process (the CLI start-up is covered by tests/method_configs)."""
    from nerfstudio.scripts.render import DatasetRender

    folder, tmp = run
    output = tmp / "renders"
    DatasetRender(
        load_config=folder / "config.yml", output_path=output, split="test", rendered_output_names=["rgb", "rgb_fixed"]
    ).main()
    n_eval = len(json.loads((synth_scene / "synth_meta.json").read_text())["eval"])
    for name in ("rgb", "rgb_fixed"):
        assert len(list(output.rglob(f"{name}/*.jpg")) + list(output.rglob(f"{name}/*.png"))) == n_eval


def test_ns_export_gaussian_splat(run):
    folder, tmp = run
    output = tmp / "export"
    _run(["ns-export", "gaussian-splat", f"--load-config={folder / 'config.yml'}", f"--output-dir={output}"], tmp)
    ply = output / "splat.ply"
    header = ply.read_bytes()[:2000].split(b"end_header")[0].decode()
    vertices = int(next(line.split()[-1] for line in header.splitlines() if line.startswith("element vertex")))
    assert vertices > 0
    for field in ("x", "f_dc_0", "opacity", "scale_0", "rot_0"):
        assert f"property float {field}" in header
