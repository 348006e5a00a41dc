"""`--pipeline.model.fixer.backend self`: the method trains a NAFNet on its scene's training views before its first
training step (in ns-train subprocesses), uses it, and ns-eval of the run uses it again for post-processing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from difix_ns.fixers.config import FixerConfig

BIN = Path(sys.executable).parent


def test_self_backend_without_a_run_is_a_clear_error():
    with pytest.raises(ValueError, match="self back-end is a NAFNet trained on a scene's own training views"):
        FixerConfig(backend="self").setup()


def test_self_fixer_trains_on_training_views_only_and_serves_ns_eval(synth_scene, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home")}

    def run(*args: str) -> None:
        result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run(
        "ns-train", "difix-splatfacto", f"--data={synth_scene}", f"--output-dir={tmp_path}", "--experiment-name=e",
        "--timestamp=t", "--max-num-iterations=10", "--steps-per-save=10", "--vis=tensorboard",
        "--pipeline.progressive.fix-start=5", "--pipeline.progressive.fix-every=100",
        "--pipeline.model.fixer.backend=self", "--pipeline.self-fixer.iterations=6",
        "--pipeline.self-fixer.num-folds=2", "--pipeline.self-fixer.steps=3", "--pipeline.self-fixer.crop-size=16",
        "--pipeline.self-fixer.require-gain=False",  # 3 NAFNet steps: kept on purpose, to check it is used
    )
    run_dir = tmp_path / "e" / "difix-splatfacto" / "t"
    assert (run_dir / "difix_self_fixer" / "train" / "fixer").is_dir()
    assert (run_dir / "difix_pseudo").is_dir(), "the progressive update ran with the self fixer"

    transforms = json.loads((synth_scene / "transforms.json").read_text())
    eval_names = set(transforms["test_filenames"]) | set(transforms["val_filenames"])
    manifest = (run_dir / "difix_self_fixer" / "pairs" / "manifest.jsonl").read_text().splitlines()
    used = {json.loads(line)["view"] for line in manifest} | {json.loads(line)["reference_view"] for line in manifest}
    assert used and used <= set(transforms["train_filenames"]) and not used & eval_names

    run("ns-eval", f"--load-config={run_dir / 'config.yml'}", f"--output-path={tmp_path / 'eval.json'}")
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert "psnr_fixed" in results and results["psnr_fixed"] != results["psnr"], "post-processing used the self fixer"
