"""Difix back-end on tiny random models of the real classes, saved in the public layout and loaded back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from difix_ns.fixers.config import FixerConfig
from difix_ns.fixers.difix import DifixFixer, sd_turbo_unet_config, sd_turbo_vae_config
from difix_ns.fixers.difix_vae import DifixAutoencoderKL, skip_conv_channels


def _images(b=2, h=37, w=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


# ------------------------------------------------------------------ architecture facts
def test_full_size_parameter_counts_on_meta_device():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd_turbo_unet_config())
        stock = AutoencoderKL(**{k: v for k, v in sd_turbo_vae_config().items() if k != "lora_rank"})
        plain = DifixAutoencoderKL(**sd_turbo_vae_config(lora_rank=0))
        lora = DifixAutoencoderKL(**sd_turbo_vae_config(lora_rank=4))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 860e6 < count(unet) < 870e6  # SD 2.1 / SD-Turbo UNet: 865.9M
    assert 83e6 < count(stock) < 85e6  # SD VAE: 83.65M
    skip = 512 * 512 + 256 * 512 + 128 * 512 + 128 * 256
    assert count(plain) == count(stock) + skip
    assert count(plain) < count(lora) < count(plain) + 2e6  # rank-4 LoRA on the decoder only
    assert skip_conv_channels((128, 256, 512, 512)) == [(512, 512), (256, 512), (128, 512), (128, 256)]
    names = {n for n, _ in lora.named_parameters()}
    for i in range(1, 5):
        assert f"decoder.skip_conv_{i}.base_layer.weight" in names
        assert f"decoder.skip_conv_{i}.lora_A.vae_skip.weight" in names
        assert f"decoder.skip_conv_{i}.lora_B.vae_skip.weight" in names
    assert not any("lora" in n for n in names if n.startswith("encoder."))
    assert "decoder.mid_block.attentions.0.to_out.0.lora_A.vae_skip.weight" in names
    assert "decoder.up_blocks.0.upsamplers.0.conv.lora_B.vae_skip.weight" in names


def test_scheduler_alpha_bar_and_x0_formula():
    fixer = DifixFixer.random("tiny")
    assert fixer.timestep == 199 and fixer.prompt == "remove degradation"
    assert abs(fixer.alpha_bar - 0.755) < 0.01
    abar = float(fixer.scheduler.alphas_cumprod[199])
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        eps = fixer.unet(z, torch.tensor([199]), encoder_hidden_states=fixer.prompt_embeds).sample
        x0 = fixer.denoise(z)
    torch.testing.assert_close(x0, (z - (1 - abar) ** 0.5 * eps) / abar**0.5)


def test_noise_start_denoises_the_latent_noised_to_the_timestep_level():
    """NiFi's t0 start: z_t = sqrt(abar) z + sqrt(1 - abar) n, the UNet at t on z_t, x0 from z_t; fixed noise in
    eval mode (same output twice), fresh noise in training mode."""
    fixer = DifixFixer.random("tiny", seed=1).eval()
    fixer.noise_start, fixer.noise_seed = True, 3
    abar = fixer.alpha_bar
    z = torch.randn(1, 4, 4, 4)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    start = abar**0.5 * z + (1 - abar) ** 0.5 * noise
    with torch.no_grad():
        torch.testing.assert_close(fixer.start_latent(z), start)
        eps = fixer.unet(start, torch.tensor([199]), encoder_hidden_states=fixer.prompt_embeds).sample
        torch.testing.assert_close(fixer.denoise(z), (start - (1 - abar) ** 0.5 * eps) / abar**0.5)
        x = _images(1, 16, 16)
        torch.testing.assert_close(fixer.fix(x), fixer.fix(x), atol=0, rtol=0)
        fixer.train()
        assert not torch.equal(fixer.start_latent(z), fixer.start_latent(z)), "fresh noise while training"
        fixer.noise_start = False
        torch.testing.assert_close(fixer.start_latent(z), z)


def test_noise_start_is_saved_and_can_be_overridden(tmp_path: Path):
    fixer = DifixFixer.random("tiny", seed=2)
    fixer.noise_start = True
    fixer.save_pretrained(tmp_path / "nifi")
    assert json.loads((tmp_path / "nifi" / "model_index.json").read_text())["noise_start"] is True
    assert DifixFixer.from_pretrained(tmp_path / "nifi").noise_start, "a checkpoint trained for it keeps it"
    config = FixerConfig(backend="difix", checkpoint=str(tmp_path / "nifi"), device="cpu", noise_start=False)
    assert not config.setup().noise_start


# ------------------------------------------------------------------ public layout
def test_public_layout_tensor_names(nvidia_difix_dir: Path):
    keys = set(load_file(str(nvidia_difix_dir / "vae/diffusion_pytorch_model.safetensors")))
    assert "decoder.skip_conv_1.base_layer.weight" in keys
    assert "decoder.skip_conv_4.lora_B.vae_skip.weight" in keys
    assert "decoder.conv_in.lora_A.vae_skip.weight" in keys
    assert "encoder.conv_in.weight" in keys and "decoder.conv_in.weight" not in keys
    cfg = json.loads((nvidia_difix_dir / "vae/config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKL" and cfg["lora_rank"] == 4
    assert cfg["gamma"] == 1.0 and cfg["ignore_skip"] is False


def test_load_public_layout_any_size_and_no_text_encoder_kept(nvidia_difix_dir: Path):
    fixer = DifixFixer.from_pretrained(nvidia_difix_dir)
    assert not fixer.reference_attention
    assert not any("text" in n for n, _ in fixer.named_modules())
    x = _images()
    y = fixer.fix(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    with pytest.warns(UserWarning, match="does not use reference views"):
        y_ref = fixer.fix(x, torch.rand(2, 1, 3, 37, 53))
    torch.testing.assert_close(y_ref, y)


def test_prompt_is_encoded_once(nvidia_difix_dir: Path, monkeypatch):
    from transformers import CLIPTextModel

    calls = []
    original = CLIPTextModel.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CLIPTextModel, "forward", counting)
    fixer = DifixFixer.from_pretrained(nvidia_difix_dir)
    fixer.fix(_images(1, 16, 16))
    fixer.fix(_images(2, 16, 16))
    assert len(calls) == 1


def test_peft_adapter_and_merged_weights_agree(nvidia_difix_dir: Path):
    peft_fixer = DifixFixer.from_pretrained(nvidia_difix_dir, merge_vae_lora=False)
    merged = DifixFixer.from_pretrained(nvidia_difix_dir, merge_vae_lora=True)
    assert any("lora_A" in n for n, _ in peft_fixer.vae.named_parameters())
    assert not any("lora" in n for n, _ in merged.vae.named_parameters())
    x = _images()
    torch.testing.assert_close(merged.fix(x), peft_fixer.fix(x), atol=1e-4, rtol=0)
    with torch.no_grad():  # the LoRA matters (B != 0 in the test checkpoint), so the agreement is not trivial
        for name, p in peft_fixer.vae.named_parameters():
            if "lora_B" in name:
                p.zero_()
    assert (peft_fixer.fix(x) - merged.fix(x)).abs().max() > 1e-3


def test_own_format_roundtrip_identical(nvidia_difix_ref_dir: Path, tmp_path: Path):
    fixer = DifixFixer.from_pretrained(nvidia_difix_ref_dir)
    fixer.save_pretrained(tmp_path / "own")
    assert not (tmp_path / "own/text_encoder").exists()
    loaded = DifixFixer.from_pretrained(tmp_path / "own")
    assert loaded.reference_attention and loaded.prompt == "remove degradation"
    torch.testing.assert_close(loaded.prompt_embeds, fixer.prompt_embeds)
    x, refs = _images(2, 24, 40), torch.rand(2, 2, 3, 24, 40)
    torch.testing.assert_close(loaded.fix(x, refs), fixer.fix(x, refs), atol=0, rtol=0)
    merged = FixerConfig(backend="difix", checkpoint=str(tmp_path / "own"), device="cpu").setup()
    torch.testing.assert_close(merged.fix(x, refs), fixer.fix(x, refs), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ reference attention
def test_view_folding_processor_matches_joint_attention():
    from diffusers.models.attention_processor import Attention

    from difix_ns.fixers.reference_attention import ViewFoldedSelfAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    tokens = torch.randn(2 * 3, 5, 16)  # B=2, V=3, N=5
    folded = ViewFoldedSelfAttnProcessor()(attn, tokens, num_views=3)
    joint = attn(tokens.reshape(2, 15, 16)).reshape(6, 5, 16)
    torch.testing.assert_close(folded, joint)
    torch.testing.assert_close(ViewFoldedSelfAttnProcessor()(attn, tokens, num_views=1), attn(tokens))


def test_reference_model_uses_refs_any_count_and_keeps_batch_independent(nvidia_difix_ref_dir: Path):
    fixer = DifixFixer.from_pretrained(nvidia_difix_ref_dir)
    assert fixer.reference_attention
    x = _images(2, 16, 24)
    refs = torch.rand(2, 2, 3, 16, 24)
    y0 = fixer.fix(x)
    y1 = fixer.fix(x, refs[:, :1])
    y2 = fixer.fix(x, refs)
    assert y1.shape == y2.shape == x.shape
    assert (y1 - y0).abs().max() > 1e-4 and (y2 - y1).abs().max() > 1e-4
    torch.testing.assert_close(fixer.fix(x[1:], refs[1:]), y2[1:], atol=1e-5, rtol=0)
    small = fixer.fix(x, torch.nn.functional.interpolate(refs.flatten(0, 1), size=(8, 12)).unflatten(0, (2, 2)))
    assert small.shape == x.shape


def test_sdpa_classic_and_channels_last_agree(nvidia_difix_ref_dir: Path):
    fixer = DifixFixer.from_pretrained(nvidia_difix_ref_dir)
    x, refs = _images(1, 16, 16), torch.rand(1, 1, 3, 16, 16)
    y = fixer.fix(x, refs)
    fixer.set_attention("classic")
    torch.testing.assert_close(fixer.fix(x, refs), y, atol=1e-5, rtol=0)
    fixer.set_attention("sdpa")
    fixer.configure(channels_last=True, chunk_size=1)
    torch.testing.assert_close(fixer.fix(x, refs), y, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ errors and hub ids
def test_incomplete_folder_names_missing_files(nvidia_difix_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(nvidia_difix_dir, broken)
    (broken / "vae/diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(FileNotFoundError, match=r"missing vae/diffusion_pytorch_model.safetensors, tokenizer/"):
        DifixFixer.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face id"):
        DifixFixer.from_pretrained(tmp_path / "nope" / "deeper")


def test_wrong_vae_weights_name_the_tensors(nvidia_difix_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(nvidia_difix_dir, broken)
    path = broken / "vae/diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    del state["decoder.skip_conv_2.base_layer.weight"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match="decoder.skip_conv_2"):
        DifixFixer.from_pretrained(broken)


def _fake_hub_cache(cache: Path, repo_id: str, src: Path) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_offline_uses_cache(nvidia_difix_ref_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    _fake_hub_cache(cache, "nvidia/difix_ref", nvidia_difix_ref_dir)
    fixer = DifixFixer.from_pretrained("nvidia/difix_ref", cache_dir=cache)
    assert fixer.reference_attention
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        DifixFixer.from_pretrained("nvidia/difix", cache_dir=cache)
