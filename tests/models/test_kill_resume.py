"""kill -9 of real subprocesses, then the same command again, resumes (issue 12 item 3, "Faults"):

- `ns-train ... --pipeline.model.fixer.backend=self` killed while the self fixer's NAFNet trains: the rerun keeps
  the finished curation units and continues the NAFNet from its last checkpoint;
- `difix-ns curate` killed after its first unit finished (and the next one started): the rerun keeps that unit;
- `difix-ns train-fixer` killed after a checkpoint: the rerun continues from it to the full step count;
- `difix-ns benchmark` killed after its first run finished: the rerun keeps that run and completes.

Every kill is timed by polling for the file that marks the moment (never by sleeping a guessed time), kills the
command's whole process group (the ns-train children too, as a scheduler's kill does), and checks that the command
was still running, so that the rerun really has something to resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

BIN = Path(sys.executable).parent
DEADLINE_S = 600.0
pytestmark = pytest.mark.slow


def _env(tmp: Path) -> dict:
    return {
        **os.environ,
        "TORCH_HOME": str(tmp / "empty_torch_home"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "400",  # rich wraps less: the messages asserted on stay on one line
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def _run_and_kill_when(command: List[str], ready: Callable[[], bool], what: str, env: dict, log: Path) -> None:
    """Start `command` in its own process group and kill -9 the whole group as soon as `ready()` is true. Fails
    clearly if the command ends first or `ready()` is still false after DEADLINE_S."""
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"{command[0]} ended (exit {process.returncode}) before {what}; its output:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {DEADLINE_S:g} s; output so far:\n{_tail(log)}")
            time.sleep(0.05)
        assert process.poll() is None, f"{command[0]} finished before the kill: nothing left to resume"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"killed by SIGKILL, got exit {process.returncode}"


def _rerun(command: List[str], env: dict) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=DEADLINE_S)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"the rerun failed (exit {result.returncode}):\n{log[-6000:]}"
    return log.replace("\n", "")


def _complete_checkpoint_steps(folder: Path) -> List[int]:
    """Steps of train_fixer checkpoints that were completely saved (train_state.json is written last)."""
    return sorted(int(p.parent.name.split("-")[1]) for p in folder.glob("step-*/train_state.json"))


def _mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ ns-train self


def test_kill_9_while_the_self_fixer_trains_then_the_same_command_keeps_units_and_resumes_the_nafnet(
    synth_scene, tmp_path
):
    env = _env(tmp_path)
    nafnet_steps = 200  # a checkpoint every 20 steps: the kill comes with at least 180 steps still to go
    command = [
        str(BIN / "ns-train"), "difix-splatfacto", f"--data={synth_scene}", f"--output-dir={tmp_path}",
        "--experiment-name=e", "--timestamp=t", "--max-num-iterations=4", "--steps-per-save=4", "--vis=tensorboard",
        "--steps-per-eval-image=1000", "--steps-per-eval-batch=1000", "--steps-per-eval-all-images=1000",
        "--pipeline.progressive.fix-start=2", "--pipeline.progressive.fix-every=100",
        "--pipeline.model.fixer.backend=self", "--pipeline.self-fixer.iterations=6",
        "--pipeline.self-fixer.num-folds=2", f"--pipeline.self-fixer.steps={nafnet_steps}",
        "--pipeline.self-fixer.max-seconds=100000", "--pipeline.self-fixer.crop-size=16",
        "--pipeline.self-fixer.nafnet-width=8", "--pipeline.self-fixer.batch-size=2",
        "--pipeline.self-fixer.require-gain=False", "--pipeline.self-fixer.cpu=True",
    ]  # fmt: skip
    run_dir = tmp_path / "e" / "difix-splatfacto" / "t"
    self_dir = run_dir / "difix_self_fixer"
    checkpoints = (self_dir / "train" / "checkpoints").resolve()

    _run_and_kill_when(
        command, lambda: bool(_complete_checkpoint_steps(checkpoints)),
        "a complete NAFNet checkpoint (difix_self_fixer/train/checkpoints/step-*/train_state.json)",
        env, tmp_path / "first.log",
    )  # fmt: skip
    units = sorted(p.parent.name for p in (self_dir / "pairs" / "units").glob("*/pairs.jsonl"))
    assert units == ["leave-out-0of2", "leave-out-1of2"], f"curation finished before the NAFNet started: {units}"
    saved = _complete_checkpoint_steps(checkpoints)[-1]
    assert 0 < saved < nafnet_steps and not (self_dir / "train" / "summary.json").exists()
    assert not (run_dir / "nerfstudio_models").exists() or not list((run_dir / "nerfstudio_models").iterdir())
    units_before = _mtimes(self_dir / "pairs" / "units")

    log = _rerun(command, env)
    assert "(0 units run, 2 resumed" in log, "curation reused both finished units"
    report = json.loads((self_dir / "pairs" / "report.json").read_text())
    assert report["units_run"] == [] and sorted(report["units_resumed"]) == units
    assert _mtimes(self_dir / "pairs" / "units") == units_before, "the finished units' files were left as they were"
    assert f"train-fixer: resumed from {checkpoints / f'step-{saved:07d}'} (step {saved})" in log, log[-4000:]
    summary = json.loads((self_dir / "train" / "summary.json").read_text())
    assert summary["step"] == nafnet_steps
    assert summary["history"][0]["step"] > saved, "the rerun trained only the steps after the checkpoint"
    assert (self_dir / "train" / "fixer").is_dir()
    assert (run_dir / "nerfstudio_models" / "step-000000003.ckpt").is_file(), "the main run finished"
    assert (run_dir / "difix_pseudo").is_dir(), "the progressive update ran with the resumed self fixer"


# ------------------------------------------------------------------------------------------------ curate


def test_kill_9_during_curate_then_a_rerun_keeps_the_finished_unit(synth_scene, tmp_path):
    env, out = _env(tmp_path), tmp_path / "pairs"
    command = [
        str(BIN / "difix-ns"), "curate", f"--data={synth_scene}", f"--out={out}", "--strategies", "leave-out",
        "--num-folds=2", "--iterations=6",
    ]  # fmt: skip
    first, second = out / "units" / "leave-out-0of2", out / "units" / "leave-out-1of2"
    started = second / "run" / "run" / "difix-splatfacto"
    # the first unit is done and the second one's ns-train has begun: the kill cuts a reconstruction
    _run_and_kill_when(
        command, lambda: (first / "pairs.jsonl").is_file() and started.is_dir(),
        "the first unit's pairs.jsonl and the second unit's reconstruction folder", env, tmp_path / "first.log",
    )  # fmt: skip
    assert not (second / "pairs.jsonl").exists() and not (out / "report.json").exists()
    first_before = _mtimes(first)

    log = _rerun(command, env)
    report = json.loads((out / "report.json").read_text())
    assert report["units_resumed"] == ["leave-out-0of2"] and report["units_run"] == ["leave-out-1of2"], report
    assert "(1 units run, 1 resumed" in log
    assert _mtimes(first) == first_before, "the finished unit's files were left as they were"
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == report["num_pairs"] > 0
    for name in ("leave-out-0of2", "leave-out-1of2"):
        assert (out / "units" / name / "pairs.jsonl").is_file()


# ------------------------------------------------------------------------------------------------ train-fixer


def _toy_manifest(folder: Path, count: int = 6, size: int = 32) -> Path:
    """Triplets in the curate format: clean = smooth pattern, degraded = blurred + noise, reference = shifted."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lines = []
    for i in range(count):
        f, phase = rng.uniform(2, 6, size=3), rng.uniform(0, 6.3, size=3)
        clean = np.stack([0.5 + 0.4 * np.sin(f[c] * 6.3 * (xx + yy * (c - 1) * 0.5) + phase[c]) for c in range(3)], -1)
        blurred = sum(np.roll(np.roll(clean, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        images = {
            "degraded": np.clip(blurred + rng.normal(0, 0.05, clean.shape), 0, 1),
            "clean": clean,
            "reference": np.roll(clean, 2, axis=1),
        }
        record = {"id": f"toy/{i}", "strategy": "leave-out", "source_scene": "toy", "height": size, "width": size}
        for key, image in images.items():
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{i:03d}_{key}.png")
            record[key] = f"{i:03d}_{key}.png"
        lines.append(json.dumps(record))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def test_kill_9_during_train_fixer_then_a_rerun_resumes_from_the_checkpoint(tmp_path):
    env, out, steps = _env(tmp_path), tmp_path / "run", 200
    manifest = _toy_manifest(tmp_path / "toy")
    command = [
        str(BIN / "difix-ns"), "train-fixer", "--manifests", str(manifest), f"--out={out}", f"--steps={steps}",
        "--save-every=10", "--val-every=1000", "--log-every=1", "--nafnet-width=4", "--nafnet-enc-blocks", "1",
        "--nafnet-dec-blocks", "1", "--crop-size=32", "--batch-size=3", "--perceptual=off", "--val-fraction=0.2",
        "--max-seconds=None", "--cpu",
    ]  # fmt: skip
    checkpoints = (out / "checkpoints").resolve()
    _run_and_kill_when(
        command, lambda: bool(_complete_checkpoint_steps(checkpoints)),
        "a complete checkpoint (checkpoints/step-*/train_state.json)", env, tmp_path / "first.log",
    )  # fmt: skip
    saved = _complete_checkpoint_steps(checkpoints)[-1]
    assert 0 < saved < steps and not (out / "summary.json").exists()

    log = _rerun(command, env)
    assert f"train-fixer: resumed from {checkpoints / f'step-{saved:07d}'} (step {saved})" in log, log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == steps
    assert summary["history"][0]["step"] == saved + 1, "the rerun continued right after the checkpoint"
    assert (out / "fixer").is_dir()


# ------------------------------------------------------------------------------------------------ benchmark


def test_kill_9_during_the_benchmark_then_a_rerun_keeps_the_finished_run(tmp_path):
    env, out = _env(tmp_path), tmp_path / "bench"
    command = [
        str(BIN / "difix-ns"), "benchmark", "--seeds", "0", "--resolution=32", "--iters=6", "--methods", "splatfacto",
        "difix-splatfacto", "--fixer=identity", f"--out={out}",
    ]  # fmt: skip
    runs = out / "runs" / "synth0"
    kept = runs / "splatfacto" / "result.json"
    _run_and_kill_when(command, kept.is_file, "runs/synth0/splatfacto/result.json", env, tmp_path / "first.log")
    assert not (runs / "difix-splatfacto" / "result.json").exists() and not (out / "results.json").exists()
    before = kept.stat().st_mtime_ns

    log = _rerun(command, env)
    assert "synth0/splatfacto: finished earlier, kept" in log
    assert kept.stat().st_mtime_ns == before, "the finished run was not trained again"
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["splatfacto", "difix-splatfacto"]
    assert (runs / "difix-splatfacto" / "result.json").is_file()
