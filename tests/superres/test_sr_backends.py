"""The `difix` and `sd-x4` SR back-ends on tiny random checkpoints in the public layouts: settings and their errors,
the 3DSR posterior draw (against diffusers' DDPMScheduler and inside the back-end, with the encoded render),
per-view latents on disk, and a resume through the pipeline's own glue that continues bit-identically."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from difix_ns.superres.backends import make_backend
from difix_ns.superres.base import sr_targets
from difix_ns.superres.config import DifixSuperResConfig, SdX4SuperResConfig, SuperResConfig
from difix_ns.superres.ops import upsample
from difix_ns.superres.sd_x4 import posterior_step, q_sample, round_timesteps


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory) -> Path:
    from difix_ns.superres.testing import write_tiny_upscaler

    return write_tiny_upscaler(tmp_path_factory.mktemp("ckpt") / "sd_x4")


@pytest.fixture(scope="module")
def difix_ref_dir(tmp_path_factory) -> Path:
    from difix_ns.fixers.testing import write_nvidia_layout

    return write_nvidia_layout(tmp_path_factory.mktemp("ckpt") / "difix_ref", reference=True, seed=1)


def _sd_x4(folder: Path, rounds: int = 2, **kwargs) -> SuperResConfig:
    return SuperResConfig(backend="sd-x4", rounds=rounds, sd_x4=SdX4SuperResConfig(checkpoint=str(folder), **kwargs))


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "config, message",
    [
        (SuperResConfig(backend="sd_x4"), r"superres.backend must be one of self, bicubic, difix, sd-x4, got 'sd_x4'"),
        (SuperResConfig(backend="difix", difix=DifixSuperResConfig(checkpoint="")), r"superres.difix.checkpoint"),
        (SuperResConfig(backend="difix", difix=DifixSuperResConfig(device="gpu")), r"superres.difix.device must be"),
        (SuperResConfig(backend="sd-x4", sd_x4=SdX4SuperResConfig(noise_level=-1)), r"superres.sd_x4.noise_level"),
        (SuperResConfig(backend="sd-x4", sd_x4=SdX4SuperResConfig(checkpoint=" ")), r"superres.sd_x4.checkpoint"),
    ],
)
def test_bad_backend_settings_name_the_setting(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_unused_backend_settings_are_not_checked():
    SuperResConfig(backend="bicubic", sd_x4=SdX4SuperResConfig(noise_level=-1)).validate()


def test_missing_upscaler_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    from difix_ns.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing_id = _sd_x4(Path("nobody-here/no-such-upscaler"), cache_dir=tmp_path / "hf")
    with pytest.raises(UserError, match=r"superres.sd_x4.checkpoint 'nobody-here/no-such-upscaler' .* local Hugging"):
        make_backend(missing_id).prepare([], 4, tmp_path / "backend")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"superres.sd_x4.checkpoint folder .*empty has no model_index.json"):
        make_backend(_sd_x4(tmp_path / "empty")).prepare([], 4, tmp_path / "backend")
    with pytest.raises(UserError, match=r"neither a folder nor a Hugging Face id"):
        make_backend(_sd_x4(tmp_path / "no" / "such" / "folder")).prepare([], 4, tmp_path / "backend")


# ------------------------------------------------------------------------------------------------ the math
def test_round_timesteps_are_spaced_over_the_rounds():
    assert round_timesteps(1000, 4) == [999, 666, 333, 0]  # 3DSR's schedule
    assert round_timesteps(1000, 2) == [999, 0]
    assert round_timesteps(1000, 1) == [999]


def test_posterior_step_is_ddpm_step_with_the_given_x0():
    from diffusers import DDPMScheduler

    # prediction_type="sample": the model output *is* x0, so step() is the posterior draw around our x0
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02,
                              prediction_type="sample", clip_sample=False)  # fmt: skip
    scheduler.set_timesteps(timesteps=[999, 666, 333, 0])
    torch.manual_seed(0)
    for t, s in ((999, 666), (666, 333), (333, 0)):
        x0, x_t = torch.randn(1, 4, 6, 5), torch.randn(1, 4, 6, 5)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
        expected = scheduler.step(x0, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        ours, meta = posterior_step(x0, x_t, t, s, scheduler.alphas_cumprod, noise)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
        assert meta["c1"] > 0 and meta["c2"] > 0 and meta["sigma"] > 0
    with pytest.raises(ValueError, match="need 0 <= s < t"):
        posterior_step(x0, x_t, 333, 333, scheduler.alphas_cumprod, noise)


# ------------------------------------------------------------------------------------------------ sd-x4
def test_sd_x4_rounds_use_the_encoded_render_and_keep_latents(upscaler_dir, tmp_path):
    torch.manual_seed(0)
    backend = make_backend(_sd_x4(upscaler_dir, rounds=2))
    backend.prepare([], 4, tmp_path)
    lr, renders = torch.rand(2, 3, 8, 8), [torch.rand(2, 3, 32, 32) for _ in range(2)]
    out = sr_targets(backend, lr, renders[0], (32, 32), apply_color_fix=True, indices=[3, 5])
    assert out.shape == (2, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    abar, (t0, t1) = backend.alphas_cumprod, backend.timesteps
    first = torch.load(tmp_path / "latents" / "round-01" / "view-0005.pt", weights_only=True)
    noise = torch.randn(first["latent"].shape, generator=backend._generator(5, 0))
    torch.testing.assert_close(first["latent"], q_sample(backend._encode(renders[0][1:]), t0, abar, noise))
    sr_targets(backend, lr, renders[1], (32, 32), apply_color_fix=False, indices=[3, 5])
    second = torch.load(tmp_path / "latents" / "round-02" / "view-0005.pt", weights_only=True)
    assert (second["round"], second["timestep"]) == (2, 0)
    # hand-computed step: the encoded round-2 render takes x0's place in the posterior around round 1's latent
    noise = torch.randn(first["latent"].shape, generator=backend._generator(5, 1))
    expected, _ = posterior_step(backend._encode(renders[1][1:]), first["latent"], t0, t1, abar, noise)
    torch.testing.assert_close(second["latent"], expected)
    with pytest.raises(ValueError, match="has had all 2 rounds"):
        backend.upscale(lr, renders[1], (32, 32), indices=[3, 5])
    with pytest.raises(ValueError, match="one latent per training view"):
        backend.upscale(lr, renders[1], (32, 32))


def test_sd_x4_other_factors_and_sizes_without_render(upscaler_dir, tmp_path):
    backend = make_backend(_sd_x4(upscaler_dir, rounds=2))
    backend.prepare([], 2, tmp_path)
    lr = torch.rand(1, 3, 15, 17)  # factor 2 of 30 x 34: not a multiple of the VAE's x4
    outs = [backend.upscale(lr, None, (30, 34), indices=[0]) for _ in range(2)]
    assert all(o.shape == (1, 3, 30, 34) for o in outs)
    first = torch.load(tmp_path / "latents" / "round-01" / "view-0000.pt", weights_only=True)
    assert first["latent"].shape == (1, 4, 8, 9)  # (32, 36) / 4
    # no render: the first latent is pure noise (plain ancestral sampling of the upscaler)
    torch.testing.assert_close(first["latent"], torch.randn((1, 4, 8, 9), generator=backend._generator(0, 0)))


def _fake_pipeline(superres: SuperResConfig, renders, lr_views, backend_path=None, sr_round=0):
    """The attributes `Sr3dPipeline.prepare_superres` and `make_targets` use, without a dataset or model."""
    fake = SimpleNamespace(config=SimpleNamespace(superres=superres), backend_path=backend_path, sr_round=sr_round)
    fake._lr_views_chw = lambda: list(lr_views)
    fake._render_training_views = lambda: [r.clone() for r in renders[fake.sr_round]]
    fake.datamanager = SimpleNamespace(lr_images=[v.permute(1, 2, 0) for v in lr_views])
    return fake


def test_sd_x4_resume_through_the_pipeline_continues_bit_identically(upscaler_dir, tmp_path):
    from difix_ns.superres.pipeline import Sr3dPipeline

    torch.manual_seed(0)
    lr_views = [torch.rand(3, 8, 8) for _ in range(3)]
    renders = [[torch.rand(3, 32, 32) for _ in range(3)] for _ in range(2)]
    run = _fake_pipeline(_sd_x4(upscaler_dir), renders, lr_views)
    Sr3dPipeline.prepare_superres(run, tmp_path)
    assert run.backend_path == (tmp_path / "sr3d" / "backend").resolve()
    targets = []
    for r in range(2):
        run.sr_round = r
        targets.append(Sr3dPipeline.make_targets(run)[0])
    files = sorted(p.name for p in (run.backend_path / "latents" / "round-01").iterdir())
    assert files == ["view-0000.pt", "view-0001.pt", "view-0002.pt"]
    assert not all(torch.equal(a, b) for a, b in zip(*targets))  # round 2 differs from round 1
    # a resumed run (checkpoint after round 1) loads the back-end from its folder and round 1's latents
    resumed = _fake_pipeline(_sd_x4(upscaler_dir), renders, lr_views, backend_path=run.backend_path, sr_round=1)
    Sr3dPipeline.prepare_superres(resumed, tmp_path)
    again = Sr3dPipeline.make_targets(resumed)[0]
    assert all(torch.equal(a, b) for a, b in zip(again, targets[1]))
    broken = _fake_pipeline(_sd_x4(upscaler_dir), renders, lr_views, backend_path=tmp_path / "elsewhere", sr_round=1)
    with pytest.raises(FileNotFoundError, match="no latents of round 1"):
        Sr3dPipeline.prepare_superres(broken, tmp_path)


# ------------------------------------------------------------------------------------------------ difix
def test_difix_backend_refines_the_render_with_the_lr_view_as_reference(difix_ref_dir, tmp_path):
    torch.manual_seed(0)
    settings = DifixSuperResConfig(checkpoint=str(difix_ref_dir), device="cpu")
    backend = make_backend(SuperResConfig(backend="difix", difix=settings))
    with pytest.raises(RuntimeError, match="no fixer yet"):
        backend.upscale(torch.rand(1, 3, 8, 8), None, (16, 16))
    backend.prepare([], 2, tmp_path)
    assert backend.fixer.supports_refs
    lr, render, size = torch.rand(1, 3, 8, 6), torch.rand(1, 3, 16, 12), (16, 12)
    out, bicubic = backend.upscale(lr, render, size, indices=[0]), upsample(lr, size)
    assert out.shape == (1, 3, 16, 12) and 0 <= float(out.min()) and float(out.max()) <= 1
    torch.testing.assert_close(out, backend.fixer.fix(render, bicubic[:, None]))
    # before there is a render: the bicubic-upsampled LR view is refined
    torch.testing.assert_close(backend.upscale(lr, None, size), backend.fixer.fix(bicubic, bicubic[:, None]))
    no_ref_settings = DifixSuperResConfig(str(difix_ref_dir), reference=False)
    no_ref = make_backend(SuperResConfig(backend="difix", difix=no_ref_settings))
    no_ref.fixer = backend.fixer
    torch.testing.assert_close(no_ref.upscale(lr, render, size), backend.fixer.fix(render, None))


def test_difix_backend_missing_checkpoint_names_the_setting(tmp_path):
    settings = DifixSuperResConfig(checkpoint=str(tmp_path / "no_such_difix"), device="cpu")
    with pytest.raises(ValueError, match=r"superres.difix.checkpoint: .*no_such_difix"):
        make_backend(SuperResConfig(backend="difix", difix=settings)).prepare([], 2, tmp_path)


def test_sr_targets_checks_the_number_of_indices():
    backend = make_backend(SuperResConfig(backend="bicubic"))
    with pytest.raises(ValueError, match="2 view indices for a batch of 1 LR views"):
        sr_targets(backend, torch.rand(1, 3, 8, 8), None, (16, 16), apply_color_fix=False, indices=[0, 1])
