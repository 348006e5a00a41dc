"""difix-splatfacto: pseudo views appear at the scheduled steps, train with the right weight, survive a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from difix_ns.data.datamanagers import DifixFullImageDatamanager
from difix_ns.progressive.poses import pose_distances

from difix_training_helpers import SPLAT_FIX_EVERY, SPLAT_FIX_START, SPLAT_ITERATIONS, tiny_trainer_config, train


def _eval_count(scene: Path) -> int:
    return len(json.loads((scene / "synth_meta.json").read_text())["eval"])


def test_pseudo_views_appear_exactly_at_the_scheduled_steps(trained_splatfacto, synth_scene):
    pipeline, run = trained_splatfacto["trainer"].pipeline, trained_splatfacto["run"]
    expected_steps = list(range(SPLAT_FIX_START, SPLAT_ITERATIONS, SPLAT_FIX_EVERY))
    assert expected_steps == [3, 7]
    state = pipeline.progressive_state
    assert [int(h["step"]) for h in state.history] == expected_steps
    assert sorted(p.name for p in (run / "difix_pseudo").iterdir()) == [f"step-{s:09d}" for s in expected_steps]
    n_eval = _eval_count(synth_scene)
    for step in expected_steps:
        folder = run / "difix_pseudo" / f"step-{step:09d}"
        meta = json.loads((folder / "cameras.json").read_text())
        assert len(meta["frames"]) == n_eval and len(list((folder / "images").glob("*.png"))) == n_eval
    views = pipeline.datamanager.pseudo_views
    assert len(views) == n_eval, "one pseudo view per evaluation pose (replace mode)"
    assert all(tuple(im.shape) == (48, 48, 3) for im in views.images)


def test_pseudo_views_are_trained_on_after_the_first_update_only(trained_splatfacto):
    records = trained_splatfacto["records"]
    pseudo_steps = [r["step"] for r in records if r["batch"].get("difix_pseudo")]
    assert pseudo_steps and min(pseudo_steps) > SPLAT_FIX_START
    num_train = len(trained_splatfacto["trainer"].pipeline.datamanager.train_dataset)
    for r in records:
        if r["batch"].get("difix_pseudo"):
            assert r["camera"].metadata is None or "cam_idx" not in r["camera"].metadata
            assert 0 <= r["batch"]["image_idx"] < num_train
            assert r["batch"]["mask"].shape == (48, 48, 1)


def test_references_are_the_nearest_training_views(trained_splatfacto):
    pipeline = trained_splatfacto["trainer"].pipeline
    views = pipeline.datamanager.pseudo_views
    train_poses = pipeline.datamanager.train_dataset.cameras.camera_to_worlds
    nearest = pose_distances(views.cameras.camera_to_worlds, train_poses).argmin(dim=1)
    assert views.reference_indices.tolist() == nearest.tolist()


def test_pseudo_fraction_of_draws(trained_splatfacto):
    datamanager: DifixFullImageDatamanager = trained_splatfacto["trainer"].pipeline.datamanager
    draws = [bool(datamanager.next_train(0)[1].get("difix_pseudo")) for _ in range(600)]
    assert 0.25 < sum(draws) / len(draws) < 0.35


def test_pseudo_loss_is_weighted_and_masked(trained_splatfacto):
    model = trained_splatfacto["trainer"].pipeline.model
    model.train()
    size = 48 // model._get_downscale_factor()  # splatfacto trains coarse-to-fine: the target is downscaled
    image = torch.rand(48, 48, 3)
    outputs = {"rgb": torch.rand(size, size, 3), "background": torch.zeros(3)}
    real = model.get_loss_dict(outputs, {"image": image})["main_loss"]
    mask = torch.ones(48, 48, 1, dtype=torch.bool)
    pseudo = model.get_loss_dict(outputs, {"image": image, "mask": mask, "difix_pseudo": True})["main_loss"]
    assert pseudo.item() == pytest.approx(0.3 * real.item(), rel=1e-4)
    mask[:, :24] = False
    changed = image.clone()
    changed[:, :24] = 1 - changed[:, :24]
    a = model.get_loss_dict(outputs, {"image": image, "mask": mask, "difix_pseudo": True})["main_loss"]
    b = model.get_loss_dict(outputs, {"image": changed, "mask": mask, "difix_pseudo": True})["main_loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-5), "pixels with alpha < threshold must not count"


def test_resume_restores_the_identical_pseudo_set_and_schedule(trained_splatfacto, synth_scene, tmp_path):
    before = trained_splatfacto["trainer"].pipeline.progressive_state
    run = trained_splatfacto["run"]
    config = tiny_trainer_config("difix-splatfacto", synth_scene, tmp_path, 4, load_dir=run / "nerfstudio_models")
    config.pipeline.progressive.fix_start, config.pipeline.progressive.fix_every = SPLAT_FIX_START, SPLAT_FIX_EVERY
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    after = trainer.pipeline.progressive_state
    assert (after.num_updates, after.last_update_step) == (before.num_updates, before.last_update_step) == (2, 7)
    torch.testing.assert_close(after.poses, before.poses)
    restored = trainer.pipeline.datamanager.pseudo_views
    assert len(restored) == len(before.pseudo)
    assert all(torch.equal(a, b) for a, b in zip(restored.images, before.pseudo.images))
    assert all(torch.equal(a, b) for a, b in zip(restored.masks, before.pseudo.masks))
    torch.testing.assert_close(restored.cameras.camera_to_worlds, before.pseudo.cameras.camera_to_worlds)
    trainer.train()  # steps 10..13: the next scheduled update is at 11
    assert [int(h["step"]) for h in trainer.pipeline.progressive_state.history] == [3, 7, 11]
    assert (tmp_path / "e" / "difix-splatfacto" / "t" / "difix_pseudo" / "step-000000011").is_dir()


def test_targets_from_a_viewer_camera_path_or_the_training_path(trained_splatfacto, tmp_path):
    pipeline = trained_splatfacto["trainer"].pipeline
    config = pipeline.config.progressive
    saved = (config.targets, config.camera_path, config.max_views)
    frames = [
        {"camera_to_world": [1, 0, 0, 0.1 * i, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1], "fov": 50.0, "aspect": 1.0}
        for i in range(30)
    ]
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps({"render_height": 720, "render_width": 720, "camera_path": frames}))
    try:
        config.targets, config.camera_path, config.max_views = "path", path, 5
        cameras = pipeline.novel_camera_targets()
        assert cameras.shape[0] == 5 and int(cameras.height[0]) == 48  # subsampled, resized to training height
        config.targets, config.max_views = "interpolated", 0
        assert pipeline.novel_camera_targets().shape[0] == len(pipeline.datamanager.train_dataset) - 1
        config.targets, config.camera_path = "path", tmp_path / "empty.json"
        (tmp_path / "empty.json").write_text("")
        with pytest.raises(ValueError, match="the file is empty"):
            pipeline.novel_camera_targets()
    finally:
        config.targets, config.camera_path, config.max_views = saved
