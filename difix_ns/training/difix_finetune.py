"""Which parameters of a Difix model train, and how the trained model is written back in the Fixer format.

Difix3D+ fine-tunes the VAE decoder through LoRA (the `vae_skip` adapter on the decoder convs, attention
projections and the 1x1 skip convs, already part of `DifixAutoencoderKL`), the skip convs themselves, and the whole
UNet. `unet="lora"` is a cheaper option: a peft LoRA adapter (`unet_lora`) on the UNet's attention projections,
merged into plain UNet weights on export so the checkpoint keeps the stock diffusers UNet format.
"""

from __future__ import annotations

from typing import Any, List

from torch import nn

__all__ = ["UNET_ADAPTER", "export_difix", "prepare_difix_for_training"]

UNET_ADAPTER = "unet_lora"
_UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def prepare_difix_for_training(fixer: Any, unet: str = "full", unet_lora_rank: int = 8) -> List[nn.Parameter]:
    """Freeze everything except the VAE decoder LoRA + skip convs and the UNet (fully, by LoRA, or not at all:
    `unet` = "full" | "lora" | "frozen"). Returns the trainable parameters."""
    if unet not in ("full", "lora", "frozen"):
        raise ValueError(f"unet must be 'full', 'lora' or 'frozen', got {unet!r}")
    vae = fixer.vae
    if int(vae.config.lora_rank) <= 0 or not any("lora_A" in n for n, _ in vae.named_parameters()):
        raise ValueError(
            "the Difix VAE has no decoder LoRA to train (it was loaded merged); load it with merge_vae_lora=False"
        )
    fixer.requires_grad_(False)
    for name, param in vae.named_parameters():
        if ".lora_A." in name or ".lora_B." in name or ".skip_conv_" in name:
            param.requires_grad_(True)
    if unet == "full":
        fixer.unet.requires_grad_(True)
    elif unet == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=unet_lora_rank, lora_alpha=unet_lora_rank, target_modules=_UNET_LORA_TARGETS)
        inject_adapter_in_model(config, fixer.unet, adapter_name=UNET_ADAPTER)
        for name, param in fixer.unet.named_parameters():
            param.requires_grad_(f".{UNET_ADAPTER}." in name)
    return [p for p in fixer.parameters() if p.requires_grad]


def export_difix(fixer: Any, folder: Any) -> None:
    """Save a trained `DifixFixer` loadable by `FixerConfig(backend="difix", checkpoint=folder)`: a UNet LoRA is
    merged into stock UNet weights; the VAE decoder LoRA stays separate (peft-style, as in the public weights)."""
    from diffusers import UNet2DConditionModel

    from difix_ns.fixers.difix_vae import merge_lora_adapter

    unet = fixer.unet
    if any(f".{UNET_ADAPTER}." in k for k in unet.state_dict()):
        merge_lora_adapter(unet, UNET_ADAPTER)
        plain = UNet2DConditionModel.from_config(unet.config)
        plain.load_state_dict(unet.state_dict())  # a stock UNet: nothing of peft left in the saved model
        fixer.unet = plain.to(next(unet.parameters()).device)
        fixer.set_attention(fixer.attention)
    fixer.save_pretrained(folder)
