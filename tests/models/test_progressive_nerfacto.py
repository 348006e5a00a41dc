"""difix-nerfacto: pseudo views join the ray batches (30%), with in-range camera indices and weighted loss;
the novel cameras reach their targets by the run's last update (`progressive.reach_targets`)."""

from __future__ import annotations

import pytest
import torch
from difix_training_helpers import forbid_eval_images, record_batches, tiny_trainer_config


@pytest.fixture(scope="module")
def trained_nerfacto(synth_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("nerf_progressive")
    config = tiny_trainer_config("difix-nerfacto", synth_scene, out, 6)
    progressive = config.pipeline.progressive
    progressive.fix_start, progressive.fix_every, progressive.max_views = 2, 3, 2
    progressive.reach_targets = True
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    forbid_eval_images(trainer.pipeline.datamanager)
    records = record_batches(trainer.pipeline.datamanager)
    trainer.train()
    return {"trainer": trainer, "records": records, "run": out / "e" / "difix-nerfacto" / "t"}


def test_updates_at_the_scheduled_steps(trained_nerfacto):
    pipeline = trained_nerfacto["trainer"].pipeline
    assert [int(h["step"]) for h in pipeline.progressive_state.history] == [2, 5]
    views = pipeline.datamanager.pseudo_views
    assert len(views) == 2 and tuple(views.images[0].shape) == (48, 48, 3)
    assert (trained_nerfacto["run"] / "difix_pseudo" / "step-000000005" / "cameras.json").is_file()


def test_reach_targets_knows_the_runs_last_step_and_arrives_by_it(trained_nerfacto):
    pipeline = trained_nerfacto["trainer"].pipeline
    assert pipeline._last_train_step == 5  # 6 iterations from step 0, read from the trainer
    first, last = pipeline.progressive_state.history
    assert last["mean_remaining"] == pytest.approx(0.0, abs=1e-4) and last["reached"] == 1.0
    assert first["mean_remaining"] > 0.0, "halfway at the first of two updates, unless every target was near"


def test_ray_batches_mix_real_and_pseudo_rays_with_training_camera_indices(trained_nerfacto):
    num_train = len(trained_nerfacto["trainer"].pipeline.datamanager.train_dataset)
    records = trained_nerfacto["records"]
    assert all("difix_pseudo" not in r["batch"] for r in records if r["step"] <= 2)
    mixed = [r for r in records if r["step"] > 2]
    assert mixed
    for r in mixed:
        pseudo = r["batch"]["difix_pseudo"]
        assert pseudo.shape == (200,) and int(pseudo.sum()) == 60  # 30% of 200 rays
        assert r["batch"]["image"].shape == (200, 3) and r["batch"]["difix_mask"].shape == (200, 1)
        indices = r["camera"].camera_indices
        assert len(r["camera"]) == 200
        assert int(indices.min()) >= 0 and int(indices.max()) < num_train


def test_pseudo_rays_are_weighted_and_masked_in_the_rgb_loss(trained_nerfacto):
    model = trained_nerfacto["trainer"].pipeline.model
    model.eval()  # the RGB loss only (no interlevel/distortion terms)
    n = 10
    outputs = {"rgb": torch.rand(n, 3), "accumulation": torch.ones(n, 1)}
    image = torch.rand(n, 3)
    plain = model.get_loss_dict(outputs, {"image": image})["rgb_loss"]
    pseudo = torch.zeros(n, dtype=torch.bool)
    pseudo[5:] = True
    mask = torch.ones(n, 1)
    mask[9] = 0.0
    weighted = model.get_loss_dict(outputs, {"image": image, "difix_pseudo": pseudo, "difix_mask": mask})["rgb_loss"]
    per_ray = ((image - outputs["rgb"]) ** 2).mean(dim=-1)
    expected = (per_ray[:5].sum() + 0.3 * per_ray[5:9].sum()) / n
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    assert plain.item() == pytest.approx(per_ray.mean().item(), rel=1e-5)
