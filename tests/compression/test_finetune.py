"""Fine-tune after pruning: the kept Gaussians fit the training views better, the file still fits its budget, the
run's own Gaussians are left as they were, and a quantization-aware fine-tune fits them better after
quantization than a float one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difix_ns.compression import BITS_LADDER, dequantize, quantize, unpack
from difix_ns.compression.codec import prune
from difix_ns.compression.command import compress_scene
from difix_ns.compression.finetune import finetune_gaussians
from difix_ns.compression.restoration import render_scene

pytestmark = pytest.mark.slow


def _training_psnr(scene, params) -> float:
    dataset = scene.pipeline.datamanager.train_dataset
    renders = render_scene(scene.pipeline.model, params, dataset.cameras)
    errors = [np.mean((r - dataset.get_image_float32(i)[..., :3].numpy()) ** 2) for i, r in enumerate(renders)]
    return float(-10 * np.log10(np.mean(errors)))


def test_finetuning_the_kept_gaussians_fits_the_training_views_better(scene):
    model = scene.pipeline.model
    before = {k: v.detach().clone() for k, v in model.gauss_params.items()}
    pruned = prune(scene.params, scene.importance, scene.params["means"].shape[0] // 4)
    tuned = finetune_gaussians(model, pruned, scene.pipeline.datamanager.train_dataset, steps=40)
    assert {k: v.shape for k, v in tuned.items()} == {k: v.shape for k, v in pruned.items()}
    assert _training_psnr(scene, tuned) > _training_psnr(scene, pruned) + 0.2
    for key, value in model.gauss_params.items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        finetune_gaussians(model, pruned, scene.pipeline.datamanager.train_dataset, steps=-1)


def test_a_finetuned_file_still_fits_its_budget(scene, tmp_path):
    plain = compress_scene(scene, tmp_path / "plain.dxs", budget_bytes=20000)
    tuned = compress_scene(scene, tmp_path / "tuned.dxs", budget_bytes=20000, finetune_steps=20)
    assert tuned["bytes"] == (tmp_path / "tuned.dxs").stat().st_size <= 20000
    assert tuned["finetune_steps"] == 20 and tuned["num_gaussians"] <= plain["num_gaussians"]
    decoded = {name: dequantize(unpack((tmp_path / f"{name}.dxs").read_bytes())[0]) for name in ("plain", "tuned")}
    assert _training_psnr(scene, decoded["tuned"]) > _training_psnr(scene, decoded["plain"])


def test_quantization_aware_finetuning_fits_better_after_quantization(scene):
    model, train = scene.pipeline.model, scene.pipeline.datamanager.train_dataset
    pruned = prune(scene.params, scene.importance, scene.params["means"].shape[0] // 4)
    bits = BITS_LADDER[-1]  # coarse: quantization costs the most
    after = {}
    for name, start in (("float", 1.0), ("aware", 0.0)):
        tuned = finetune_gaussians(model, pruned, train, steps=100, bits=bits, sh_degree=0, quantize_from=start)
        after[name] = _training_psnr(scene, dequantize(quantize(tuned, sh_degree=0, bits=bits)))
    assert after["aware"] > after["float"] + 0.2, after
    with pytest.raises(ValueError, match="quantize_from"):
        finetune_gaussians(model, pruned, train, steps=1, bits=bits, quantize_from=1.5)


def test_auto_bits_are_chosen_again_after_a_float_probe(scene, tmp_path, monkeypatch):
    import difix_ns.compression.finetune as finetune

    calls = []
    real = finetune.finetune_gaussians

    def recording(model, params, dataset, steps, **kwargs):
        calls.append({"n": params["means"].shape[0], "steps": steps, **kwargs})
        return real(model, params, dataset, steps, **kwargs)

    monkeypatch.setattr(finetune, "finetune_gaussians", recording)
    summary = compress_scene(scene, tmp_path / "auto.dxs", budget_bytes=20000, finetune_steps=8,
                             finetune_quantize_from=0.5)  # fmt: skip
    probe, final = calls
    assert probe["steps"] == 4 and probe.get("bits") is None  # float probe over the first search's Gaussians
    assert final["steps"] == 8 and final["bits"] == summary["bits"] and final["quantize_from"] == 0.5
    assert summary["num_gaussians"] <= final["n"] <= probe["n"]
    assert summary["bytes"] <= 20000
    # the search after the probe starts PROBE_LADDER_MARGIN allocations finer than the first search's choice
    from difix_ns.compression.command import PROBE_LADDER_MARGIN

    first = compress_scene(scene, tmp_path / "plain.dxs", budget_bytes=20000)["bits"]
    start = max(0, BITS_LADDER.index(first) - PROBE_LADDER_MARGIN)
    assert summary["bit_scores"][0][0] == BITS_LADDER[start]


def test_a_finetune_in_seconds_takes_the_steps_that_fit(scene, tmp_path, monkeypatch):
    import difix_ns.compression.finetune as finetune

    model, train = scene.pipeline.model, scene.pipeline.datamanager.train_dataset
    pruned = prune(scene.params, scene.importance, scene.params["means"].shape[0] // 4)
    clock = iter([0.0, 3.0])  # the trial: 3 steps in 3 s, so 1 s a step
    monkeypatch.setattr("time.perf_counter", lambda: next(clock, 3.0))
    assert finetune.steps_within(model, pruned, train, seconds=33.0, runs=1.5, trial_steps=3) == 20  # (33-3)/1/1.5
    clock = iter([0.0, 3.0])
    assert finetune.steps_within(model, pruned, train, seconds=2.0, trial_steps=3) == 0  # the trial used it all
    monkeypatch.undo()
    with pytest.raises(ValueError, match="seconds must be > 0"):
        finetune.steps_within(model, pruned, train, seconds=0.0)

    summary = compress_scene(scene, tmp_path / "timed.dxs", budget_bytes=20000, finetune_seconds=5.0)
    assert summary["finetune_seconds"] == 5.0 and summary["finetune_steps"] >= 1 and summary["bytes"] <= 20000
    with pytest.raises(ValueError, match="not both"):
        compress_scene(scene, tmp_path / "both.dxs", budget_bytes=20000, finetune_steps=5, finetune_seconds=5.0)


def test_the_finetune_starts_at_splatfacto_initial_rates_and_decays_to_a_fraction(scene, monkeypatch):
    import difix_ns.compression.finetune as finetune
    from difix_ns.method_configs.difix_splatfacto import splatfacto_optimizers

    made = []

    class Recording(torch.optim.lr_scheduler.ExponentialLR):
        def __init__(self, optimizer, gamma):
            super().__init__(optimizer, gamma)
            made.append(self)

    monkeypatch.setattr(torch.optim.lr_scheduler, "ExponentialLR", Recording)
    groups = splatfacto_optimizers()
    rates = finetune._learning_rates()
    assert rates["means"] == pytest.approx(groups["means"]["optimizer"].lr)  # not the end-of-schedule rate
    assert rates["opacities"] == pytest.approx(2 * groups["opacities"]["optimizer"].lr)
    pruned = prune(scene.params, scene.importance, scene.params["means"].shape[0] // 4)
    finetune.finetune_gaussians(scene.pipeline.model, pruned, scene.pipeline.datamanager.train_dataset, steps=10)
    (decay,) = made
    final = [group["lr"] for group in decay.optimizer.param_groups]
    np.testing.assert_allclose(final, [r * finetune.LR_FINAL_FRACTION for r in decay.base_lrs], rtol=1e-5)
