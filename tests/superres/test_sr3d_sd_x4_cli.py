"""sr3d-splatfacto with the `sd-x4` back-end through the real ns-train on a tiny 32 px scene (factor 2, so the
x4 upscaler's condition is the LR view resampled) and a tiny random upscaler: two rounds keep one latent per view,
and the pipeline `--load-dir` builds continues round 2 from round 1's latents (bit-identical continuation:
test_sr_backends.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _train(scene: Path, out: Path, upscaler: Path, iterations: int, *extra: str) -> tuple:
    args = [
        str(BIN / "ns-train"), "sr3d-splatfacto", f"--data={scene}", f"--output-dir={out}", "--experiment-name=e",
        "--timestamp=t", f"--max-num-iterations={iterations}", "--steps-per-save=8",
        "--save-only-latest-checkpoint=False", "--vis=tensorboard", "--pipeline.superres.factor=2",
        "--pipeline.superres.lr-iterations=6", "--pipeline.superres.rounds=2",
        "--pipeline.superres.iterations-per-round=4", "--pipeline.superres.backend=sd-x4",
        f"--pipeline.superres.sd-x4.checkpoint={upscaler}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "TORCH_HOME": str(out / "torch_home"), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=out.parent)
    assert result.returncode == 0, f"ns-train failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr, out / "e" / "sr3d-splatfacto" / "t"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    """(ns-train log, run folder, scratch folder) of the full tiny schedule (14 steps) with the sd-x4 back-end."""
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene
    from difix_ns.superres.testing import write_tiny_upscaler

    tmp = tmp_path_factory.mktemp("sr3d_sd_x4")
    scene = make_synthetic_scene(SynthConfig(out=tmp / "scene", seed=0, resolution=32))
    log, run = _train(scene, tmp / "outputs", write_tiny_upscaler(tmp / "upscaler"), 14)
    return log, run, tmp


def test_sd_x4_rounds_keep_one_latent_per_view(trained):
    log, run, _ = trained
    assert "round 1 starts after step 5" in log and "round 2 starts after step 9" in log
    views = len(list((run / "sr3d" / "round-01" / "targets").glob("*.png")))
    latents = run / "sr3d" / "backend" / "latents"
    for r, timestep in ((1, 999), (2, 0)):
        files = sorted((latents / f"round-{r:02d}").glob("view-*.pt"))
        assert len(files) == views > 0
        state = torch.load(files[0], map_location="cpu", weights_only=True)
        assert (state["round"], state["timestep"]) == (r, timestep)
        assert state["latent"].shape == (1, 4, 8, 8)  # HR 32 / the VAE's x4


def test_the_resumed_pipeline_continues_from_round_1_latents(trained):
    """What `ns-train --load-dir ... --load-step=8` builds (in process: a second ns-train would double the time)."""
    import yaml

    _, run, tmp = trained
    latents = run / "sr3d" / "backend" / "latents"
    views = len(list((run / "sr3d" / "round-01" / "targets").glob("*.png")))
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)
    checkpoint = torch.load(run / "nerfstudio_models" / "step-000000008.ckpt", map_location="cpu", weights_only=False)
    pipeline.load_pipeline(checkpoint["pipeline"], checkpoint["step"])
    assert pipeline.sr_round == 1 and pipeline.backend_path == (run / "sr3d" / "backend").resolve()
    pipeline.prepare_superres(tmp / "resumed")
    backend = pipeline._backend
    saved = torch.load(latents / "round-01" / "view-0000.pt", map_location="cpu", weights_only=True)
    assert sorted(backend.state) == list(range(views)) and torch.equal(backend.state[0]["latent"], saved["latent"])
    targets, _ = pipeline.make_targets()  # round 2 continues from round 1's latents
    assert len(targets) == views and all(s["round"] == 2 for s in backend.state.values())
