"""The Difix VAE: Stable Diffusion's AutoencoderKL with encoder->decoder skip connections and a decoder LoRA.

Wu, Zhang, Turki, et al. "Difix3D+: Improving 3D Reconstructions with Single-Step Diffusion Models", CVPR 2025
(arXiv:2503.01774); the skip design comes from Parmar et al. "One-Step Image Translation with Text-to-Image
Models" (pix2pix-turbo), arXiv:2403.12036.

Architecture (this project's code on diffusers' `AutoencoderKL` building blocks):
- the input of each encoder down block is kept (for SD: 128 ch at H, 128 at H/2, 256 at H/4, 512 at H/8);
- before each decoder up block i, `skip_conv_{i+1}(skips[::-1][i] * gamma)` is added; the skip convs are
  bias-free 1x1 convs (SD: 512->512, 256->512, 128->512, 128->256), initialised to 1e-5;
- a LoRA adapter named `vae_skip` wraps the decoder's convs, attention projections and the skip convs.

Names checked against the public reference (nv-tlabs/Difix3D, `src/model.py`, commit c76edc5, read with the
code-search tool): attribute names `decoder.skip_conv_1..4`, their channel pairs and bias=False, the 1e-5 init,
`decoder.gamma = 1`, `decoder.ignore_skip = False`, skip order (`incoming_skip_acts[::-1][idx]` added before
`up_blocks[idx]`), the adapter name "vae_skip", the LoRA target suffixes `conv1, conv2, conv_in, conv_shortcut,
conv, conv_out, skip_conv_1..4, to_k, to_q, to_v, to_out.0` restricted to module names containing "decoder",
`init_lora_weights="gaussian"` with peft's default `lora_alpha` (8). A third-party loader of `nvidia/difix`
(found with the same tool) confirms the stored key style `<name>.base_layer.weight`, `<name>.lora_A.vae_skip.weight`,
`<name>.lora_B.vae_skip.weight`, the file `vae/diffusion_pytorch_model.safetensors`, and that `vae/config.json`
carries the extra keys `lora_rank`, `gamma`, `ignore_skip`. Not checked (no network here): the published files
themselves; `tests/fixers/` pins the assumed layout so the first real download can confirm it.

With `lora_rank=0` the decoder carries plain weights: load a peft-style state dict through
`merge_lora_adapter` (peft's merge, W = base + lora_alpha / rank * B @ A). Both routes give the same output.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "ADAPTER_NAME",
    "LORA_TARGET_SUFFIXES",
    "DifixAutoencoderKL",
    "decoder_lora_targets",
    "merge_lora_adapter",
    "skip_conv_channels",
]

ADAPTER_NAME = "vae_skip"
"""peft adapter name used by the public checkpoints."""

LORA_TARGET_SUFFIXES = (
    "conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
    "skip_conv_1", "skip_conv_2", "skip_conv_3", "skip_conv_4",
    "to_k", "to_q", "to_v", "to_out.0",
)  # fmt: skip
"""Suffixes of the decoder modules wrapped by the LoRA (public reference, `src/model.py`)."""

SKIP_INIT = 1e-5


def skip_conv_channels(block_out_channels: Sequence[int]) -> list[tuple[int, int]]:
    """(in, out) channels of `skip_conv_1..n`: encoder down-block inputs (reversed) -> decoder up-block inputs.

    For SD's (128, 256, 512, 512): [(512, 512), (256, 512), (128, 512), (128, 256)].
    """
    boc = list(block_out_channels)
    enc_inputs = [boc[0]] + boc[:-1]
    rev = boc[::-1]
    dec_inputs = [rev[0]] + rev[:-1]
    return list(zip(enc_inputs[::-1], dec_inputs))


def decoder_lora_targets(model: nn.Module) -> list[str]:
    """Full names of the decoder modules the `vae_skip` LoRA wraps (same rule as the public reference)."""
    return [
        name
        for name, _ in model.named_modules()
        if "decoder" in name and any(name.endswith(s) for s in LORA_TARGET_SUFFIXES)
    ]


class DifixAutoencoderKL(AutoencoderKL):
    """`AutoencoderKL` + skip convs + decoder LoRA; config = the stock SD VAE config + the keys below.

    Args (beyond `AutoencoderKL`'s):
        lora_rank: rank of the decoder LoRA (`vae_skip` adapter); 0 = no adapter (merged, plain weights).
        lora_alpha: LoRA alpha; the scale is `lora_alpha / lora_rank` (peft default 8, as in the public weights).
        gamma: multiplier on the skip activations before the skip convs.
        ignore_skip: if True the skip connections are not used.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple = ("DownEncoderBlock2D",) * 4,
        up_block_types: tuple = ("UpDecoderBlock2D",) * 4,
        block_out_channels: tuple = (128, 256, 512, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 768,
        scaling_factor: float = 0.18215,
        shift_factor: Optional[float] = None,
        latents_mean: Optional[tuple] = None,
        latents_std: Optional[tuple] = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        lora_rank: int = 4,
        lora_alpha: float = 8.0,
        gamma: float = 1.0,
        ignore_skip: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        if len(block_out_channels) != len(up_block_types) or len(block_out_channels) != len(down_block_types):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
        self._add_skip_convs(block_out_channels)
        if lora_rank > 0:
            self._add_decoder_lora(lora_rank, lora_alpha)

    def _add_skip_convs(self, block_out_channels: tuple) -> None:
        """The bias-free 1x1 convs that carry the encoder's skip activations into the decoder
        (`decoder.skip_conv_i`)."""
        for i, (cin, cout) in enumerate(skip_conv_channels(block_out_channels), start=1):
            conv = nn.Conv2d(cin, cout, kernel_size=1, bias=False)
            nn.init.constant_(conv.weight, SKIP_INIT)
            setattr(self.decoder, f"skip_conv_{i}", conv)

    def _add_decoder_lora(self, rank: int, alpha: float) -> None:
        """The decoder LoRA as a peft adapter named `vae_skip` (tensor names as in the public checkpoints)."""
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=decoder_lora_targets(self)
        )
        inject_adapter_in_model(lora, self, adapter_name=ADAPTER_NAME)

    @property
    def skip_convs(self) -> list[nn.Module]:
        return [getattr(self.decoder, f"skip_conv_{i + 1}") for i in range(len(self.decoder.up_blocks))]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode_with_skips(
        self, x: Float[Tensor, "B 3 H W"]
    ) -> tuple[Float[Tensor, "B C h w"], list[Tensor]]:
        """Encode images in [-1, 1]; returns the posterior mean (unscaled latents) and the skip activations
        (inputs of each encoder down block, shallow to deep). H, W must be multiples of `downsample_factor`."""
        enc = self.encoder
        h = enc.conv_in(x)
        skips = []
        for block in enc.down_blocks:
            skips.append(h)
            h = block(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean = h[:, : self.config.latent_channels]
        return mean, skips

    def decode_with_skips(
        self, z: Float[Tensor, "B C h w"], skips: Optional[list[Tensor]]
    ) -> Float[Tensor, "B 3 H W"]:
        """Decode unscaled latents, adding the skip activations (reversed) before each up block."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        dec = self.decoder
        h = dec.mid_block(dec.conv_in(z), None)
        use_skips = skips is not None and not self.config.ignore_skip
        if use_skips and len(skips) != len(dec.up_blocks):
            raise ValueError(f"expected {len(dec.up_blocks)} skip activations, got {len(skips)}")
        gamma = float(self.config.gamma)
        for i, block in enumerate(dec.up_blocks):
            if use_skips:
                h = h + self.skip_convs[i](skips[-1 - i] * gamma)
            h = block(h, None)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))


def merge_lora_adapter(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> nn.Module:
    """Merge the peft LoRA adapter `adapter_name` into plain weights in place (peft's `merge`: W = base + scale *
    B @ A) and put each wrapped layer's base layer back, so the model has the plain tensor names again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and adapter_name in module.lora_A:
            module.merge(adapter_names=[adapter_name])
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model
