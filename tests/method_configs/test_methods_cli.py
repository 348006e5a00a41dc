"""Every registered method through the real CLIs: ns-train, ns-eval, ns-train --load-dir, ns-render.

Runs offline in the sense that matters here: an empty torch hub cache (no LPIPS weights) and HF_HUB_OFFLINE.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ITERATIONS = 20

# Tiny settings so that a CPU run takes seconds; every flag is an ordinary ns-train option.
TINY = {
    "difix-splatfacto": ["--pipeline.model.fixer.backend=identity"],
    "difix-nerfacto": [
        "--pipeline.model.fixer.backend=identity",
        "--pipeline.model.implementation=torch",
        "--pipeline.datamanager.train-num-rays-per-batch=256",
        "--pipeline.datamanager.eval-num-rays-per-batch=256",
        "--pipeline.model.eval-num-rays-per-chunk=1024",
        "--pipeline.model.num-proposal-samples-per-ray", "32", "16",
        "--pipeline.model.num-nerf-samples-per-ray=16",
        "--pipeline.model.num-levels=4",
        "--pipeline.model.log2-hashmap-size=12",
        "--pipeline.model.max-res=64",
    ],
}


def _run(args, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _train(method: str, scene: Path, out: Path, tmp_path: Path, iterations: int, *extra: str) -> Path:
    _run(
        [
            "ns-train", method, f"--data={scene}", f"--output-dir={out}", "--experiment-name=e", "--timestamp=t",
            f"--max-num-iterations={iterations}", f"--steps-per-save={ITERATIONS}", "--vis=tensorboard",
            *TINY[method], *extra,
        ],
        tmp_path,
    )
    return out / "e" / method / "t"


@pytest.fixture(scope="module", params=sorted(TINY))
def trained(request, synth_scene, tmp_path_factory):
    """(method, run folder, scratch folder) after a short ns-train of the method."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    run = _train(request.param, synth_scene, tmp_path / "outputs", tmp_path, ITERATIONS)
    return request.param, run, tmp_path


def test_train_writes_checkpoint_and_config(trained):
    method, run, _ = trained
    assert (run / "config.yml").is_file()
    assert (run / "nerfstudio_models" / f"step-{ITERATIONS - 1:09d}.ckpt").is_file()


def test_ns_eval_reloads_checkpoint_and_writes_metrics(trained):
    method, run, tmp_path = trained
    output = tmp_path / "eval.json"
    _run(["ns-eval", f"--load-config={run / 'config.yml'}", f"--output-path={output}"], tmp_path)
    results = json.loads(output.read_text())
    assert results["method_name"] == method
    assert math.isfinite(results["results"]["psnr"]) and results["results"]["psnr"] > 5.0
    assert 0.0 < results["results"]["ssim"] <= 1.0
    assert "lpips" not in results["results"], "LPIPS without its weights must be left out, not made up"


def test_ns_train_load_dir_resumes_from_checkpoint(trained, synth_scene):
    method, run, tmp_path = trained
    # nerfstudio resumes at the saved step + 1 and runs --max-num-iterations more steps.
    resumed = _train(method, synth_scene, tmp_path / "resumed", tmp_path, 5, f"--load-dir={run / 'nerfstudio_models'}")
    steps = sorted(p.name for p in (resumed / "nerfstudio_models").glob("*.ckpt"))
    assert steps == [f"step-{ITERATIONS + 4:09d}.ckpt"], steps


def test_ns_render_dataset_renders_every_test_view(trained, synth_scene):
    method, run, tmp_path = trained
    if method != "difix-splatfacto":
        pytest.skip("one render check suffices: ns-render shares eval_setup with ns-eval")
    output = tmp_path / "renders"
    _run(
        ["ns-render", "dataset", f"--load-config={run / 'config.yml'}", f"--output-path={output}", "--split=test",
         "--rendered-output-names", "rgb"],
        tmp_path,
    )
    meta = json.loads((synth_scene / "synth_meta.json").read_text())
    rendered = sorted(output.rglob("*.png")) + sorted(output.rglob("*.jpg"))
    assert len(rendered) == len(meta["eval"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ns_viewer_loads_checkpoint_and_serves(trained):
    method, run, tmp_path = trained
    if method != "difix-splatfacto":
        pytest.skip("one viewer check suffices: ns-viewer shares eval_setup with ns-eval")
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home")}
    command = [str(BIN / "ns-viewer"), f"--load-config={run / 'config.yml'}", f"--viewer.websocket-port={_free_port()}"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
    )
    output, deadline = "", time.monotonic() + 180
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while "Done loading checkpoint" not in output and process.poll() is None and time.monotonic() < deadline:
                if selector.select(timeout=1.0):
                    output += process.stdout.readline()
    finally:
        process.kill()
        process.wait()
    assert "Done loading checkpoint" in output, output[-3000:]


def test_missing_data_folder_gets_a_clear_error(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "t")}
    result = subprocess.run(
        [str(BIN / "ns-train"), "difix-splatfacto", f"--data={tmp_path / 'nowhere'}", "--vis=tensorboard"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"data folder {tmp_path / 'nowhere'} does not exist" in result.stderr + result.stdout
