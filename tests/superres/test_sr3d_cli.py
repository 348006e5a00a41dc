"""sr3d-splatfacto through the real CLIs (ns-train, ns-train --load-dir, ns-eval) on a tiny 32 px scene, factor 2
(LR 16 px, the minimum): the LR stage, K=2 rounds, each training on its own targets, the LR term at the LR size,
resume at the right round with identical targets, evaluation at HR, and clear errors for a bad factor or size."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

HR = 32
SCHEDULE = [  # LR stage: steps 0-5; round 1: steps 6-9; round 2: steps 10-13
    "--pipeline.superres.factor=2",
    "--pipeline.superres.lr-iterations=6",
    "--pipeline.superres.rounds=2",
    "--pipeline.superres.iterations-per-round=4",
    "--pipeline.superres.self-sr.steps=5",
    "--pipeline.superres.self-sr.crop-size=16",
    "--pipeline.superres.self-sr.render-weight=1.0",  # 3DSR's alternation: each round's targets from its renders
]


def _env(cwd: Path) -> dict:
    home = str(cwd / "empty_torch_home")
    return {**os.environ, "TORCH_HOME": home, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _run(args, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=_env(cwd), cwd=cwd)
    if ok:
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _train(scene: Path, out: Path, cwd: Path, iterations: int, *extra: str, ok: bool = True, schedule=SCHEDULE):
    args = [
        "ns-train", "sr3d-splatfacto", f"--data={scene}", f"--output-dir={out}", "--experiment-name=e",
        "--timestamp=t", f"--max-num-iterations={iterations}", "--steps-per-save=8",
        "--save-only-latest-checkpoint=False", "--vis=tensorboard", *schedule, *extra,
    ]  # fmt: skip
    return _run(args, cwd, ok), out / "e" / "sr3d-splatfacto" / "t"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    return make_synthetic_scene(SynthConfig(out=tmp_path_factory.mktemp("sr3d_scene") / "scene", seed=0, resolution=HR))


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    """(ns-train output, run folder, scratch folder) of the full tiny schedule (14 steps, self back-end)."""
    tmp = tmp_path_factory.mktemp("sr3d_run")
    result, run = _train(scene, tmp / "outputs", tmp, 14)
    return result, run, tmp


def _pngs(folder: Path) -> dict:
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))}


def test_help_lists_the_method_and_its_sr_settings(tmp_path):
    listing = _run(["ns-train", "--help"], tmp_path).stdout
    assert "sr3d-splatfacto" in listing
    text = _run(["ns-train", "sr3d-splatfacto", "--help"], tmp_path).stdout
    options = ("factor", "rounds", "iterations-per-round", "lr-iterations", "lambda-lr", "ssim-weight", "backend")
    for option in (*options, "color-fix"):
        assert f"--pipeline.superres.{option}" in text, option


def test_rounds_run_after_the_lr_stage_with_their_own_targets(trained, scene):
    result, run, _ = trained
    log = result.stdout + result.stderr
    assert "round 1 starts after step 5" in log and "round 2 starts after step 9" in log
    names = sorted(p.stem for p in (scene / "images").glob("train_*.png"))
    rounds = [_pngs(run / "sr3d" / f"round-{r:02d}" / "targets") for r in (1, 2)]
    for targets in rounds:
        assert sorted(Path(n).stem for n in targets) == names
        assert all(t.shape == (HR, HR, 3) for t in targets.values())
    assert any(not np.array_equal(rounds[0][n], rounds[1][n]) for n in rounds[0]), "round 2 re-made its targets"
    state = torch.load(run / "nerfstudio_models" / "step-000000013.ckpt", map_location="cpu", weights_only=False)
    extra = state["pipeline"]["_extra_state"]
    assert extra["sr3d_round"] == 2
    assert [Path(f).parent.parent.name for f in extra["sr3d_targets"]] == ["round-02"] * len(names)


def test_the_default_render_weight_makes_per_frame_targets_once(scene, tmp_path):
    """With the default render weight 0 the targets are per-frame SR of the LR views: every round gets the same
    targets (the network runs once per view, cached), and none of them is the render's."""
    schedule = [arg for arg in SCHEDULE if "render-weight" not in arg]
    result, run = _train(scene, tmp_path / "outputs", tmp_path, 14, schedule=schedule)
    rounds = [_pngs(run / "sr3d" / f"round-{r:02d}" / "targets") for r in (1, 2)]
    assert rounds[0] and rounds[0].keys() == rounds[1].keys()
    assert all(np.array_equal(rounds[0][n], rounds[1][n]) for n in rounds[0]), "per-frame targets do not change"
    assert "render-weight" not in " ".join(result.args)


def _pipeline_at(config_path: Path, checkpoint: Path, test_mode: str = "val"):
    """The run's pipeline with `checkpoint` loaded: in training mode ("val") what ns-train --load-dir builds,
    in "test" mode what ns-eval builds."""
    import yaml

    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode=test_mode, world_size=1, local_rank=0)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    pipeline.load_pipeline(state["pipeline"], state["step"])
    return pipeline


def test_each_round_trains_on_its_targets_and_the_lr_term_is_at_lr_size(trained):
    _, run, _ = trained
    pipeline = _pipeline_at(run / "config.yml", run / "nerfstudio_models" / "step-000000008.ckpt")
    assert pipeline.sr_round == 1  # step 8 is in round 1
    targets = _pngs(run / "sr3d" / "round-01" / "targets")
    names = [Path(p).stem + ".png" for p in pipeline.datamanager.train_dataset.image_filenames]
    pipeline.model.eval()  # a training-mode forward needs the trainer's optimizers (densification)
    for _ in range(3):
        camera, batch = pipeline.datamanager.next_train(9)
        index = int(camera.metadata["cam_idx"])
        assert (int(camera.height), int(camera.width)) == (HR, HR)
        assert np.array_equal(batch["image"].cpu().numpy(), targets[names[index]]), "identical targets on resume"
        assert tuple(batch["sr3d_lr_image"].shape) == (HR // 2, HR // 2, 3)
        outputs = pipeline.model(camera)
        losses = pipeline.model.get_loss_dict(outputs, batch)
        lr_loss = float(losses["lr_loss"].detach())
        assert math.isfinite(lr_loss) and lr_loss > 0
        assert pipeline.model.last_lr_term == {"render_size": (HR, HR), "lr_size": (HR // 2, HR // 2)}
    # the LR stage: LR views at LR cameras
    pipeline.datamanager.set_targets(None)
    camera, batch = pipeline.datamanager.next_train(0)
    assert (int(camera.height), int(camera.width)) == (HR // 2, HR // 2)
    assert tuple(batch["image"].shape) == (HR // 2, HR // 2, 3) and "sr3d_lr_image" not in batch
    assert tuple(pipeline.model(camera)["rgb"].shape) == (HR // 2, HR // 2, 3)


def test_densification_stops_half_way_through_each_round(trained):
    _, run, _ = trained
    pipeline = _pipeline_at(run / "config.yml", run / "nerfstudio_models" / "step-000000008.ckpt")
    model, schedule = pipeline.model, pipeline.config.superres
    calls = []
    model.optimizers, model.info = {}, {}  # what the trainer's step callback and a forward would set
    model.strategy.step_post_backward = lambda **kwargs: calls.append(kwargs["step"])
    for step in range(schedule.total_iterations + 2):
        model.step = step
        model.step_post_backward(step)
    assert calls == [s for s in range(schedule.total_iterations + 2) if schedule.densify_at(s)]
    assert 0 < len(calls) < schedule.total_iterations, "some round steps do not densify"


def test_load_dir_resumes_at_the_right_round(trained, scene):
    _, run, tmp = trained
    result, resumed = _train(scene, tmp / "resumed", tmp, 5, f"--load-dir={run / 'nerfstudio_models'}", "--load-step=8")
    log = result.stdout + result.stderr
    assert "round 1 starts" not in log and "round 2 starts after step 9" in log
    assert not (resumed / "sr3d" / "round-01").exists() and (resumed / "sr3d" / "round-02" / "targets").is_dir()
    assert "preparing the self SR back-end" not in log, "the checkpoint's self network is reused"
    state = torch.load(resumed / "nerfstudio_models" / "step-000000013.ckpt", map_location="cpu", weights_only=False)
    assert state["pipeline"]["_extra_state"]["sr3d_round"] == 2


def test_ns_eval_scores_the_held_out_views_at_hr(trained, scene):
    _, run, tmp = trained
    output = tmp / "eval.json"
    _run(["ns-eval", f"--load-config={run / 'config.yml'}", f"--output-path={output}"], tmp)
    results = json.loads(output.read_text())
    assert results["method_name"] == "sr3d-splatfacto"
    assert math.isfinite(results["results"]["psnr"]) and 0.0 < results["results"]["ssim"] <= 1.0
    assert "psnr_fixed" not in results["results"], "no post-processing: the scene's own renders are scored"
    pipeline = _pipeline_at(run / "config.yml", run / "nerfstudio_models" / "step-000000013.ckpt", "test")
    pipeline.eval()
    camera, batch = pipeline.datamanager.next_eval(0)
    assert (int(camera.height), int(camera.width)) == (HR, HR) and tuple(batch["image"].shape[:2]) == (HR, HR)
    assert tuple(pipeline.model.get_outputs_for_camera(camera)["rgb"].shape) == (HR, HR, 3)


def test_bad_factor_or_resolution_gets_a_clear_error(scene, tmp_path):
    args = ("--pipeline.superres.backend=bicubic", "--pipeline.superres.factor=4")
    result, _ = _train(scene, tmp_path / "outputs", tmp_path, 2, *args, ok=False)
    assert result.returncode != 0
    message = r"superres.factor=4 makes the training view \S+ of 32x32 px 8x8 px at low resolution; .* at least 16 px"
    assert re.search(message, result.stdout + result.stderr)
    # a factor that is not a positive integer is refused before any data is read (the same check as above)
    import yaml

    from difix_ns.method_configs.sr3d_splatfacto import sr3d_splatfacto

    config = yaml.load(yaml.dump(sr3d_splatfacto.config), Loader=yaml.Loader)
    assert config.pipeline.model.rasterize_mode == "classic", "antialiased measured worse on both real captures"
    config.pipeline.superres.factor = 0
    config.pipeline.datamanager.data = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="superres.factor must be a positive integer, got 0"):
        config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)
