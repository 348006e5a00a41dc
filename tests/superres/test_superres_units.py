"""3DSR pieces without ns-train: settings and their errors, the schedule, the loss (LR term at the LR size), the
colour fix, and the two SR back-ends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from difix_ns.superres.backends import make_backend
from difix_ns.superres.base import sr_targets
from difix_ns.superres.config import MIN_LR_SIZE, SelfSuperResConfig, SuperResConfig, check_lr_size
from difix_ns.superres.ops import color_fix, downsample, sr3d_loss, upsample
from difix_ns.superres.self_sr import STRENGTHS, stage_sizes
from difix_ns.training.losses import photometric_loss


@pytest.mark.parametrize("factor", [0, -2, 2.5, True, "4"])
def test_factor_must_be_a_positive_integer(factor):
    with pytest.raises(ValueError, match=r"superres.factor must be a positive integer, got"):
        SuperResConfig(factor=factor).validate()


@pytest.mark.parametrize("name", ["rounds", "iterations_per_round", "lr_iterations"])
def test_stage_lengths_must_be_positive(name):
    with pytest.raises(ValueError, match=f"superres.{name} must be a positive integer"):
        SuperResConfig(**{name: 0}).validate()


def test_lr_views_below_the_minimum_are_refused():
    check_lr_size(32, 48, 2)  # 16 x 24: fine
    with pytest.raises(ValueError, match=r"factor=4 makes the training view of 32x32 px 8x8 px .* at least 16 px"):
        check_lr_size(32, 32, 4)
    assert MIN_LR_SIZE == 16


def test_schedule_lr_stage_then_rounds():
    config = SuperResConfig(lr_iterations=6, rounds=2, iterations_per_round=4)
    assert [config.round_at(s) for s in range(16)] == [0] * 6 + [1] * 4 + [2] * 6
    assert config.total_iterations == 14


def test_densification_runs_in_the_lr_stage_and_the_first_half_of_each_round():
    config = SuperResConfig(lr_iterations=6, rounds=2, iterations_per_round=4)
    assert [config.densify_at(s) for s in range(16)] == [True] * 8 + [False] * 2 + [True] * 2 + [False] * 4
    whole = SuperResConfig(lr_iterations=6, rounds=2, iterations_per_round=4, densify_fraction=1.0)
    assert [whole.densify_at(s) for s in range(16)] == [True] * 14 + [False] * 2
    with pytest.raises(ValueError, match="densify_fraction"):
        SuperResConfig(densify_fraction=1.5).validate()


def _ssim(a, b):
    from pytorch_msssim import SSIM

    return SSIM(data_range=1.0, size_average=True, channel=3)(a, b)


def test_sr3d_loss_applies_the_lr_term_at_the_lr_size():
    torch.manual_seed(0)
    render = torch.rand(32, 32, 3, requires_grad=True)
    target, lr = torch.rand(32, 32, 3), torch.rand(16, 16, 3)
    losses, meta = sr3d_loss(render, target, lr, ssim_weight=0.2, lambda_lr=0.5, ssim=_ssim)
    assert meta["lr_render"].shape == (16, 16, 3)
    down = downsample(render.detach().permute(2, 0, 1)[None], (16, 16))[0].permute(1, 2, 0)
    torch.testing.assert_close(meta["lr_render"].detach(), down)
    torch.testing.assert_close(losses["lr_loss"], 0.5 * photometric_loss(down, lr, 0.2, _ssim))
    l1 = (render - target).abs().mean()
    d_ssim = 1 - _ssim(target.permute(2, 0, 1)[None], render.permute(2, 0, 1)[None])
    torch.testing.assert_close(losses["sr_loss"], 0.8 * l1 + 0.2 * d_ssim)
    losses["lr_loss"].backward()
    assert render.grad is not None and render.grad.abs().sum() > 0


def test_color_fix_takes_the_low_frequencies_of_the_lr_view():
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 16, 16)
    sr = torch.rand(1, 3, 32, 32) * 0.3  # wrong colours everywhere
    fixed = color_fix(sr, lr)
    assert fixed.shape == sr.shape
    err_before = (downsample(sr, (16, 16)) - lr).abs().mean()
    err_after = (downsample(fixed, (16, 16)) - lr).abs().mean()
    assert err_after < 0.35 * err_before


def test_bicubic_backend_is_bicubic_upsampling():
    lr = torch.rand(2, 3, 16, 20)
    backend = make_backend(SuperResConfig(backend="bicubic"))
    out = sr_targets(backend, lr, None, (32, 40), apply_color_fix=False)
    torch.testing.assert_close(out, upsample(lr, (32, 40)))
    with pytest.raises(ValueError, match="does not have the HR size"):
        sr_targets(backend, lr, torch.rand(2, 3, 30, 40), (32, 40), apply_color_fix=True)


def test_self_backend_trains_on_the_lr_views_and_upscales(tmp_path):
    torch.manual_seed(0)
    views = [torch.rand(3, 16, 16) for _ in range(3)]
    settings = SelfSuperResConfig(steps=3, crop_size=16, batch_size=2)
    backend = make_backend(SuperResConfig(backend="self", self_sr=settings))
    with pytest.raises(RuntimeError, match="not trained yet"):
        backend.upscale(views[0][None], None, (32, 32))
    backend.prepare(views, 2, tmp_path)
    manifest = (tmp_path / "pairs" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 3
    summary = (tmp_path / "train" / "summary.json").read_text()
    assert '"step": 3' in summary
    # the strength is chosen on the LR views (best PSNR, a tie keeps the weaker) and saved beside the network
    chosen = json.loads((backend.folder / "self_sr.json").read_text())
    scores = {float(k): v for k, v in chosen["scores"].items()}
    assert sorted(scores) == list(STRENGTHS) and chosen["scale_step"] == 2
    assert chosen["strength"] == backend.strength == max(STRENGTHS, key=lambda s: (round(scores[s], 4), -s))
    out = sr_targets(backend, views[0][None], torch.rand(1, 3, 32, 32), (32, 32), apply_color_fix=True)
    assert out.shape == (1, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    # a second back-end loads the trained network and its strength from its folder: same output
    again = make_backend(SuperResConfig(backend="self"))
    again.load(backend.folder)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(again.upscale(x, None, (32, 32)), backend.upscale(x, None, (32, 32)))


def test_self_backend_upscales_in_x2_stages_and_conditions_the_last_on_the_render(tmp_path):
    torch.manual_seed(0)
    views = [torch.rand(3, 16, 16) for _ in range(3)]
    settings = SelfSuperResConfig(steps=2, crop_size=16, strength=1.0, render_weight=1.0)
    backend = make_backend(SuperResConfig(backend="self", self_sr=settings))
    backend.prepare(views, 4, tmp_path)
    pairs = [json.loads(line) for line in (tmp_path / "pairs" / "manifest.jsonl").read_text().splitlines()]
    degraded = np.asarray(Image.open(tmp_path / "pairs" / pairs[0]["degraded"]), np.float32) / 255.0
    expected = upsample(downsample(views[0][None], (8, 8)), (16, 16))[0].permute(1, 2, 0).numpy()
    assert np.abs(degraded - expected).max() <= 1 / 255 + 1e-6, "pairs are one x2 round trip, not x4"
    lr, render = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32)
    net = lambda x: (x + (backend.fixer.fix(x, None) - x)).clamp(0, 1)  # noqa: E731 (strength 1)
    # without a render: bicubic x2, network, bicubic x2, network
    staged = net(upsample(net(upsample(lr, (16, 16))), (32, 32)))
    torch.testing.assert_close(backend.upscale(lr, None, (32, 32)), staged)
    # with one: the render at the last stage's input size replaces the first stage
    conditioned = net(upsample(downsample(render, (16, 16)), (32, 32)))
    torch.testing.assert_close(backend.upscale(lr, render, (32, 32)), conditioned)
    # render_weight mixes the render's path with the per-frame one (0: per-frame, the render unused)
    settings.render_weight = 0.25
    torch.testing.assert_close(backend.upscale(lr, render, (32, 32)), 0.25 * conditioned + 0.75 * staged)
    settings.render_weight = 0.0
    torch.testing.assert_close(backend.upscale(lr, render, (32, 32)), staged)
    with pytest.raises(ValueError, match="render_weight must be in"):
        SelfSuperResConfig(render_weight=1.5).validate()
    # strength 0 is bicubic upsampling in stages
    backend.strength = 0.0
    torch.testing.assert_close(backend.upscale(lr, None, (32, 32)), upsample(upsample(lr, (16, 16)), (32, 32)))


def test_self_backend_caches_the_per_frame_path_by_view_index(tmp_path, monkeypatch):
    torch.manual_seed(0)
    views = [torch.rand(3, 16, 16) for _ in range(3)]
    settings = SelfSuperResConfig(steps=2, crop_size=16, strength=1.0, render_weight=0.0)
    backend = make_backend(SuperResConfig(backend="self", self_sr=settings))
    backend.prepare(views, 2, tmp_path)
    calls = []
    fix = backend.fixer.fix
    monkeypatch.setattr(backend.fixer, "fix", lambda x, ref: calls.append(x.shape[0]) or fix(x, ref))
    lr, render = torch.stack(views[:2]), torch.rand(2, 3, 32, 32)
    first = backend.upscale(lr, render, (32, 32), indices=[0, 1])
    assert calls == [2]
    torch.testing.assert_close(first, backend.upscale(lr, None, (32, 32)))
    # the next round's call with the same views runs no network; a new view in the batch runs alone
    calls.clear()
    torch.testing.assert_close(backend.upscale(lr, render, (32, 32), indices=[0, 1]), first)
    assert calls == []
    mixed = backend.upscale(torch.stack([views[2], views[0]]), None, (32, 32), indices=[2, 0])
    assert calls == [1]
    torch.testing.assert_close(mixed[1], first[0])
    torch.testing.assert_close(mixed[0], backend.upscale(views[2][None], None, (32, 32))[0])
    # the render's path is never cached: render weight 1 runs the network on every call
    settings.render_weight = 1.0
    calls.clear()
    backend.upscale(lr, render, (32, 32), indices=[0, 1])
    backend.upscale(lr, render, (32, 32), indices=[0, 1])
    assert calls == [2, 2]
    # another strength or a loaded network does not reuse outputs made before
    settings.render_weight = 0.0
    backend.strength = 0.0
    torch.testing.assert_close(backend.upscale(lr, None, (32, 32), indices=[0, 1]), upsample(lr, (32, 32)))
    backend.load(backend.folder)
    assert backend._per_frame == {}


def test_stage_sizes_are_geometric_steps_of_at_most_the_scale_step():
    assert stage_sizes((8, 10), (32, 40), 2) == [(16, 20), (32, 40)]
    assert stage_sizes((8, 10), (32, 40), 4) == [(32, 40)]
    assert stage_sizes((8, 10), (32, 40), None) == [(32, 40)]
    assert stage_sizes((10, 10), (30, 30), 2) == [(17, 17), (30, 30)], "x3 in two steps of sqrt(3)"
    assert stage_sizes((8, 8), (64, 64), 2) == [(16, 16), (32, 32), (64, 64)]
    with pytest.raises(ValueError, match="scale_step must be an integer >= 2"):
        SelfSuperResConfig(scale_step=1).validate()
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        SelfSuperResConfig(strength=1.5).validate()