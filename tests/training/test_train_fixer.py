"""`train_fixer`: the loss goes down, resume continues from the saved step, the result loads as a Fixer, the
Difix fine-tuning trains only what it should, and 2 gloo processes end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difix_ns.fixers.config import FixerConfig
from difix_ns.training.losses import FixerLoss
from difix_ns.training.pairs import PairDataset, load_pairs
from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

TINY = dict(nafnet_width=4, nafnet_enc_blocks=(1,), nafnet_dec_blocks=(1,), crop_size=32, batch_size=3,
            perceptual="off", val_fraction=0.2, log_every=1)  # fmt: skip


def _fixed_batch_loss(fixer, manifest: Path) -> float:
    items = [PairDataset(load_pairs([manifest]))[i] for i in range(3)]
    degraded = torch.stack([it["degraded"] for it in items])
    clean = torch.stack([it["clean"] for it in items])
    with torch.no_grad():
        return float(FixerLoss("off")(fixer.eval()(degraded), clean)[0])


def test_training_lowers_the_loss_on_a_fixed_batch_and_loads_as_a_fixer(toy_manifest, tmp_path):
    config = TrainFixerConfig(manifests=(toy_manifest,), out=tmp_path / "run", steps=25, lr=3e-3, **TINY)
    from difix_ns.training.train_fixer import _build_fixer
    from accelerate.utils import set_seed

    set_seed(config.seed)
    before = _fixed_batch_loss(_build_fixer(config)[0], toy_manifest)
    folder = train_fixer(config)
    fixer = FixerConfig(backend="nafnet", checkpoint=str(folder), device="cpu").setup()
    after = _fixed_batch_loss(fixer, toy_manifest)
    assert after < 0.8 * before, (before, after)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["step"] == 25 and summary["loss"] == "l2+ssim"
    assert {"psnr", "ssim", "psnr_degraded", "ssim_degraded"} <= set(summary["validation"])
    assert list((tmp_path / "run/logs").rglob("events.out.tfevents*")), "tensorboard logs written"


def test_resume_continues_from_the_saved_step(toy_manifest, tmp_path):
    out = tmp_path / "run"
    train_fixer(TrainFixerConfig(manifests=(toy_manifest,), out=out, steps=4, save_every=2, **TINY))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    train_fixer(TrainFixerConfig(manifests=(toy_manifest,), out=out, steps=6, save_every=2, **TINY))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6
    assert [h["step"] for h in summary["history"]] == [5, 6], "the second call starts after step 4"


def test_time_budget_stops_training_early_and_a_rerun_keeps_that_fixer(toy_manifest, tmp_path):
    config = TrainFixerConfig(manifests=(toy_manifest,), out=tmp_path / "run", steps=10_000, max_seconds=0.5, **TINY)
    folder = train_fixer(config)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["step"] < 10_000
    weights = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    # The budget is spent: a second call (a resumed benchmark) returns the same fixer instead of training on.
    assert train_fixer(config) == folder
    assert json.loads((tmp_path / "run/summary.json").read_text()) == summary
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == weights


def test_a_step_bounded_training_gives_the_same_weights_twice(toy_manifest, tmp_path):
    # what `difix-ns benchmark --self-fixer-steps` relies on: no time limit, same seed -> the same fixer
    weights = []
    for name in ("a", "b"):
        folder = train_fixer(TrainFixerConfig(manifests=(toy_manifest,), out=tmp_path / name, steps=6, **TINY))
        weights.append({p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".safetensors"})
    assert weights[0] and weights[0] == weights[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_end_with_identical_weights(toy_manifest, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
        "-m", "difix_ns.training.train_fixer", "--manifests", str(toy_manifest), "--out", str(out),
        "--steps", "3", "--batch-size", "2", "--crop-size", "32", "--nafnet-width", "4", "--cpu", "--perceptual", "off",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed_backend"] == "gloo"


@pytest.fixture(scope="module")
def tiny_difix(tmp_path_factory) -> Path:
    from difix_ns.fixers.testing import write_nvidia_layout

    return write_nvidia_layout(tmp_path_factory.mktemp("difix") / "difix", seed=0)


@pytest.mark.parametrize("unet", ["lora", "full"])
def test_difix_finetune_trains_decoder_lora_skips_and_unet(toy_manifest, tiny_difix, tmp_path, unet):
    from difix_ns.fixers.difix import DifixFixer

    config = TrainFixerConfig(
        manifests=(toy_manifest,), out=tmp_path / "run", backend="difix", init_checkpoint=str(tiny_difix), unet=unet,
        steps=2, lr=1e-2, crop_size=32, batch_size=2, perceptual="off", val_fraction=0.0,
    )  # fmt: skip
    folder = train_fixer(config)
    base = DifixFixer.from_pretrained(tiny_difix, merge_vae_lora=False)
    tuned = DifixFixer.from_pretrained(folder, merge_vae_lora=False)
    b, t = base.state_dict(), tuned.state_dict()
    assert set(b) == set(t), "same tensor names as the public layout"
    changed = {k for k in b if not torch.equal(b[k], t[k])}
    assert any(".lora_B.vae_skip" in k for k in changed)
    assert any("skip_conv_" in k for k in changed)
    assert any(k.startswith("unet.") and "attn" in k for k in changed)
    assert not any(k.startswith("vae.encoder.") for k in changed), "the encoder stays frozen"
    if unet == "lora":
        assert not any(k.startswith("unet.") and "attn" not in k for k in changed), "LoRA touches attention only"
    # loads through the Fixer interface and gives a different result than the base model
    fixer = FixerConfig(backend="difix", checkpoint=str(folder), device="cpu").setup()
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(fixer.fix(x), base.eval().fix(x))


def test_difix_finetune_with_noise_start_saves_a_nifi_style_fixer(toy_manifest, tiny_difix, tmp_path):
    """train-fixer --difix-noise-start --difix-timestep t0: trained from the noised latent at t0, saved so that
    loading it keeps both."""
    config = TrainFixerConfig(
        manifests=(toy_manifest,), out=tmp_path / "run", backend="difix", init_checkpoint=str(tiny_difix),
        unet="lora", steps=1, crop_size=32, batch_size=2, perceptual="off", val_fraction=0.0,
        difix_noise_start=True, difix_timestep=100,
    )  # fmt: skip
    folder = train_fixer(config)
    fixer = FixerConfig(backend="difix", checkpoint=str(folder), device="cpu").setup()
    assert fixer.noise_start and fixer.timestep == 100
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(fixer.fix(x), fixer.fix(x), atol=0, rtol=0)
