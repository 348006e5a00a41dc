"""Faults through the real `ns-train`: a run killed while it saved a checkpoint, and a run killed with kill -9 after
its first progressive update, resume with `--load-dir` from the right step (issue 12 item 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _train_command(scene: Path, out: Path, iterations: int, *extra: str) -> list:
    return [
        str(BIN / "ns-train"), "difix-splatfacto", f"--data={scene}", f"--output-dir={out}", "--experiment-name=e",
        "--timestamp=t", f"--max-num-iterations={iterations}", "--vis=tensorboard", "--steps-per-eval-image=1000",
        "--steps-per-eval-batch=1000", "--steps-per-eval-all-images=1000", "--pipeline.model.fixer.backend=identity",
        "--pipeline.progressive.fix-start=3", "--pipeline.progressive.fix-every=100", *extra,
    ]  # fmt: skip


def _env(tmp: Path) -> dict:
    return {**os.environ, "TORCH_HOME": str(tmp / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}


def test_a_checkpoint_cut_while_saving_is_skipped_and_the_run_resumes_from_the_one_before(synth_scene, tmp_path):
    first = subprocess.run(
        _train_command(synth_scene, tmp_path, 6, "--steps-per-save=2", "--save-only-latest-checkpoint=False"),
        capture_output=True, text=True, env=_env(tmp_path), timeout=900,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    models = tmp_path / "e" / "difix-splatfacto" / "t" / "nerfstudio_models"
    checkpoints = sorted(models.glob("step-*.ckpt"))
    assert len(checkpoints) >= 2
    newest, previous = checkpoints[-1], checkpoints[-2]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # as a kill during torch.save leaves it
    resumed = subprocess.run(
        _train_command(synth_scene, tmp_path / "resumed", 8, f"--load-dir={models}"),
        capture_output=True, text=True, env=_env(tmp_path), timeout=900,
    )  # fmt: skip
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-5000:]
    assert "skipping the incomplete checkpoint" in log and newest.name in log
    assert previous.name in log.replace("\n", ""), "resumed from the checkpoint before the cut one"


def test_kill_9_after_the_first_update_then_load_dir_resumes_with_its_pseudo_views(synth_scene, tmp_path):
    import torch

    once = "--pipeline.progressive.fix-every=100000"  # one update (step 3), however far the run gets before the kill
    command = _train_command(
        synth_scene, tmp_path, 400, "--steps-per-save=4", "--save-only-latest-checkpoint=False", once
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path))
    models = tmp_path / "e" / "difix-splatfacto" / "t" / "nerfstudio_models"
    saved = models / "step-000000004.ckpt"  # after the update at step 3
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and not saved.is_file():
        time.sleep(0.5)
    time.sleep(2.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "e" / "difix-splatfacto" / "t" / "difix_pseudo").is_dir(), "the first update ran"
    from difix_ns.checkpoints import latest_complete_step

    step, _ = latest_complete_step(models)
    assert step is not None and step >= 4
    state = torch.load(models / f"step-{step:09d}.ckpt", map_location="cpu", weights_only=False)
    before = state["pipeline"]["_extra_state"]["progressive"]
    assert before["last_update_step"] == 3 and before["pseudo"] is not None

    resumed = subprocess.run(
        _train_command(
            synth_scene, tmp_path / "resumed", step + 3, f"--load-dir={models}", "--steps-per-save=1000", once
        ),
        capture_output=True, text=True, env=_env(tmp_path), timeout=900,
    )  # fmt: skip
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-5000:]
    assert f"step-{step:09d}.ckpt" in log.replace("\n", "")
    final = sorted((tmp_path / "resumed" / "e" / "difix-splatfacto" / "t" / "nerfstudio_models").glob("*.ckpt"))[-1]
    after = torch.load(final, map_location="cpu", weights_only=False)["pipeline"]["_extra_state"]["progressive"]
    assert after["last_update_step"] == 3, "no new update: the resumed run trains on the saved pseudo views"
    pairs = list(zip(before["pseudo"]["images"], after["pseudo"]["images"], strict=True))
    assert pairs and all(torch.equal(a, b) for a, b in pairs), "the resumed run kept the identical pseudo views"
