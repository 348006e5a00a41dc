"""Random Difix checkpoints in the public `nvidia/difix(_ref)` folder layout, for tests and CPU benchmarks; a
recording identity fixer for tests of what reaches a fixer.

No pretrained weight can be downloaded here, so the loader is exercised on folders that these helpers write with
the same classes, file names and tensor names as the public checkpoints (see `difix_checkpoint.py`). The parts of
the layout that are inferred rather than verified (`model_index.json` entries, the tokenizer files) are written
as the public material suggests; the first real download must confirm them.

The tokenizer is a character-level CLIP BPE vocabulary (no merges): enough to tokenize any ASCII prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import torch

from difix_ns.fixers.base import Fixer

__all__ = ["RecordingFixer", "make_char_tokenizer_files", "text_encoder_config", "write_nvidia_layout"]

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def make_char_tokenizer_files(folder: Union[str, Path]) -> int:
    """Write `vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`; returns vocab size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(i) for i in range(33, 127)]
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)


def text_encoder_config(size: str, vocab_size: int) -> dict[str, Any]:
    """CLIPTextConfig kwargs: "tiny", or "full" = SD-Turbo's OpenCLIP-H text tower (1024 wide, 23 layers)."""
    common = dict(vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                  eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, hidden_act="gelu")  # fmt: skip
    if size == "tiny":
        return dict(common, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    projection_dim=32)  # fmt: skip
    return dict(common, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                projection_dim=1024)  # fmt: skip


def _write_public_vae(folder: Path, config: dict, lora_b_std: float) -> None:
    """A random `DifixAutoencoderKL` saved as the public `vae/` folder: peft-style LoRA keys (B drawn with
    `lora_b_std`), random skip convs, the stock config plus `lora_rank`/`gamma`/`ignore_skip`, the remote-code file."""
    from safetensors.torch import save_file

    from difix_ns.fixers.difix_vae import DifixAutoencoderKL

    vae = DifixAutoencoderKL(**config)
    state = vae.state_dict()
    for key, value in state.items():
        if ".lora_B." in key:
            state[key] = torch.randn_like(value) * lora_b_std
        elif ".skip_conv_" in key and key.endswith("base_layer.weight"):
            state[key] = torch.randn_like(value) * 0.05
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    vae_cfg = {k: v for k, v in dict(vae.config).items() if not k.startswith("_") and k != "lora_alpha"}
    vae_cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.25.0", **vae_cfg}
    (folder / "config.json").write_text(json.dumps(vae_cfg, indent=2))
    (folder / "autoencoder_kl.py").write_text("# remote code of the public checkpoint; never executed\n")


def write_nvidia_layout(
    folder: Union[str, Path],
    size: str = "tiny",
    reference: bool = False,
    seed: int = 0,
    lora_b_std: float = 0.02,
) -> Path:
    """Write a random checkpoint in the public layout: `model_index.json`, `scheduler/`, `text_encoder/`,
    `tokenizer/`, `unet/`, `vae/` (peft-style `vae_skip` LoRA keys, config with `lora_rank`, `gamma`,
    `ignore_skip`), and for `reference=True` the custom-UNet marker of `nvidia/difix_ref`.

    `lora_b_std`: LoRA B matrices are drawn with this std (peft initialises them to zero, which would make any
    merged-vs-adapter comparison trivial).
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from difix_ns.fixers.difix import (
        sd_turbo_scheduler_config,
        sd_turbo_unet_config,
        sd_turbo_vae_config,
        tiny_unet_config,
        tiny_vae_config,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vocab_size = make_char_tokenizer_files(folder / "tokenizer")
        text_cfg = text_encoder_config(size, vocab_size)
        CLIPTextModel(CLIPTextConfig(**text_cfg)).save_pretrained(str(folder / "text_encoder"))
        unet_cfg = tiny_unet_config(text_cfg["hidden_size"]) if size == "tiny" else sd_turbo_unet_config()
        UNet2DConditionModel(**unet_cfg).save_pretrained(str(folder / "unet"))
        _write_public_vae(folder / "vae", tiny_vae_config() if size == "tiny" else sd_turbo_vae_config(), lora_b_std)
        DDPMScheduler(**sd_turbo_scheduler_config()).save_pretrained(str(folder / "scheduler"))
    finally:
        torch.random.set_rng_state(rng_state)
    index = {
        "_class_name": "DifixPipeline",
        "_diffusers_version": "0.25.0",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["unet_2d_condition", "UNet2DConditionModel"] if reference else ["diffusers", "UNet2DConditionModel"],
        "vae": ["autoencoder_kl", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if reference:
        (folder / "unet/unet_2d_condition.py").write_text("# remote code of the public checkpoint; never executed\n")
    return folder


class RecordingFixer(Fixer):
    """An identity fixer with `warped_references` K that records the `WarpedViews` of every call (`seen`)."""

    def __init__(self, warped_references: int = 2) -> None:
        super().__init__()
        self.warped_references = warped_references
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # gives the fixer a device
        self.seen: list = []

    def _run(self, images, refs, warped=None):
        self.seen.append(warped)
        return images.clone()
