"""Difix: single-step diffusion artifact removal (the `difix` fixer back-end).

Wu, Zhang, Turki, Ren, Gao, Shou, Fidler, Gojcic, Ling. "Difix3D+: Improving 3D Reconstructions with Single-Step
Diffusion Models", CVPR 2025 (arXiv:2503.01774). Base model SD-Turbo (Sauer et al., arXiv:2311.17042).

One step, no noise added (checked against nv-tlabs/Difix3D `src/model.py` and README, commit c76edc5):
    z   = VAE.encode(2x - 1) * scaling_factor                (posterior mean; the reference samples, see below)
    eps = UNet(z, t=199, prompt embedding of "remove degradation")
    x0  = (z - sqrt(1 - abar_t) * eps) / sqrt(abar_t)        (abar from the DDPM scheduler's alphas_cumprod)
    out = clamp(VAE.decode(x0 / scaling_factor, skips) / 2 + 0.5, 0, 1)
With `noise_start` (NiFi, "Nix and Fix", 2026: its restorer starts the single step from an intermediate noise
level t0 instead of the clean latent) the encoded render is first noised to the step's own level,
z_t = sqrt(abar_t) z + sqrt(1 - abar_t) n, and the UNet denoises z_t at t; the timestep is then t0 (`timestep`).
The noise n is drawn fresh in training mode and from a fixed seed in eval mode (same input, same output).
The reference draws z from the VAE posterior (`latent_dist.sample()`); here the posterior mean is used so the
output is deterministic (the SD VAE's posterior std is far below the UNet's effect). The prompt is encoded once,
when the model is loaded; the text encoder is not kept. With reference views only the target is decoded.

This module holds the glue (`DifixFixer`) and the model configurations; the VAE is in `difix_vae.py`, the view
folding in `reference_attention.py`, the checkpoint formats in `difix_checkpoint.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

from difix_ns.fixers.base import Fixer
from difix_ns.fixers.difix_checkpoint import DEFAULT_PROMPT, DEFAULT_TIMESTEP, load_difix_parts, save_difix
from difix_ns.fixers.difix_vae import DifixAutoencoderKL
from difix_ns.fixers.reference_attention import install_reference_attention

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TIMESTEP",
    "DifixFixer",
    "sd_turbo_scheduler_config",
    "sd_turbo_unet_config",
    "sd_turbo_vae_config",
    "tiny_unet_config",
    "tiny_vae_config",
]



# ------------------------------------------------------------------------------------------------ configurations
def sd_turbo_unet_config() -> dict[str, Any]:
    """UNet2DConditionModel config of SD-Turbo (SD 2.1 architecture; about 866M parameters)."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        norm_num_groups=32,
    )


def sd_turbo_vae_config(lora_rank: int = 4) -> dict[str, Any]:
    """DifixAutoencoderKL config: SD's VAE (about 84M parameters) + skip convs + decoder LoRA."""
    return dict(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=768,
        scaling_factor=0.18215,
        lora_rank=lora_rank,
    )


def sd_turbo_scheduler_config() -> dict[str, Any]:
    """DDPMScheduler config of SD-Turbo: scaled_linear betas 0.00085..0.012 over 1000 steps, epsilon target."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )


def tiny_unet_config(cross_attention_dim: int = 32) -> dict[str, Any]:
    """A few-thousand-parameter UNet2DConditionModel of the same class, for tests and CPU benchmarks."""
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=4,
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=True,
        norm_num_groups=8,
    )


def tiny_vae_config(lora_rank: int = 4) -> dict[str, Any]:
    """A tiny DifixAutoencoderKL (4 levels, so the skip-conv layout and the 8x downsampling match SD's)."""
    return dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
                lora_rank=lora_rank)  # fmt: skip


# ------------------------------------------------------------------------------------------------ the fixer
class DifixFixer(Fixer):
    """Single-step Difix as a `Fixer`.

    Args:
        vae: the skip-connected VAE.
        unet: a stock diffusers `UNet2DConditionModel` (view-folding attention processors are installed on it).
        scheduler: the DDPM scheduler whose `alphas_cumprod` define the x0 formula (kept for saving).
        prompt_embeds: [1, L, D] text-encoder output for `prompt`, computed once at load time.
        timestep: the single diffusion timestep (199 for the public weights).
        reference_attention: whether reference views are mixed in (a `difix_ref` model); if False refs are ignored.
        prompt: the prompt `prompt_embeds` encodes (stored with the model).
        attention: "sdpa" (PyTorch SDPA, default) or "classic" (diffusers' plain processor, for comparisons).
        noise_start: noise the encoded render to `timestep`'s level before the step (NiFi's t0 start) instead of
            Difix's no-noise step.
        noise_seed: seed of that noise in eval mode.
    """

    def __init__(
        self,
        vae: DifixAutoencoderKL,
        unet: torch.nn.Module,
        scheduler: Any,
        prompt_embeds: Float[Tensor, "1 L D"],
        timestep: int = DEFAULT_TIMESTEP,
        reference_attention: bool = False,
        prompt: str = DEFAULT_PROMPT,
        attention: str = "sdpa",
        noise_start: bool = False,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"prompt_embeds must have shape [1, L, D], got {tuple(prompt_embeds.shape)}")
        if prompt_embeds.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(
                f"prompt_embeds width {prompt_embeds.shape[-1]} != UNet cross_attention_dim "
                f"{unet.config.cross_attention_dim}"
            )
        n_steps = len(scheduler.alphas_cumprod)
        if not 0 <= timestep < n_steps:
            raise ValueError(f"timestep must be in [0, {n_steps}), got {timestep}")
        pred_type = scheduler.config.prediction_type
        if pred_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported scheduler prediction_type {pred_type!r}")
        self.vae = vae
        self.unet = unet
        self.scheduler = scheduler
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone(), persistent=False)
        self.timestep = int(timestep)
        self.alpha_bar = float(scheduler.alphas_cumprod[self.timestep])
        self.prediction_type = pred_type
        self.reference_attention = bool(reference_attention)
        self.supports_refs = self.reference_attention
        self.prompt = prompt
        self.noise_start = bool(noise_start)
        self.noise_seed = int(noise_seed)
        self.size_multiple = vae.downsample_factor
        self.set_attention(attention)
        self._compiled: dict[str, Any] = {}

    # ---------------------------------------------------------------- speed
    def set_attention(self, attention: str) -> None:
        """"sdpa" (PyTorch scaled_dot_product_attention) or "classic" (diffusers AttnProcessor) everywhere."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        install_reference_attention(self.unet, attention)
        self.vae.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
        self.attention = attention

    def _optimize(self, channels_last: bool, compile: bool) -> None:
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if compile:
            self._compiled["unet"] = torch.compile(self.unet)
        else:
            self._compiled.pop("unet", None)

    # ---------------------------------------------------------------- computation
    def _run(
        self, images: Float[Tensor, "B 3 H W"], refs: Optional[Float[Tensor, "B R 3 H W"]]
    ) -> Float[Tensor, "B 3 H W"]:
        b = images.shape[0]
        views = images[:, None] if refs is None else torch.cat([images[:, None], refs], dim=1)
        n_views = views.shape[1]
        x = views.flatten(0, 1) * 2 - 1
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z, skips = self.vae.encode_with_skips(x)
        z = z * self.vae.config.scaling_factor
        x0 = self.denoise(z, n_views)
        x0 = x0.unflatten(0, (b, n_views))[:, 0]
        skips = [s.unflatten(0, (b, n_views))[:, 0] for s in skips]
        out = self.vae.decode_with_skips(x0 / self.vae.config.scaling_factor, skips)
        return (out / 2 + 0.5).clamp(0, 1)

    def start_latent(self, z: Float[Tensor, "BV C h w"]) -> Float[Tensor, "BV C h w"]:
        """The UNet's input: z itself (Difix), or with `noise_start` z noised to `timestep`'s level (NiFi's t0)."""
        if not self.noise_start:
            return z
        if self.training:
            noise = torch.randn_like(z)
        else:
            generator = torch.Generator(device=z.device).manual_seed(self.noise_seed)
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32).to(z.dtype)
        return self.alpha_bar**0.5 * z + (1 - self.alpha_bar) ** 0.5 * noise

    def denoise(self, z: Float[Tensor, "BV C h w"], num_views: int = 1) -> Float[Tensor, "BV C h w"]:
        """One UNet call at `timestep` and the x0 estimate from the scheduler's alpha_bar (no noise added, unless
        `noise_start`: `start_latent`)."""
        unet = self._compiled.get("unet", self.unet)
        z = self.start_latent(z)
        t = torch.full((z.shape[0],), self.timestep, device=z.device, dtype=torch.long)
        cond = self.prompt_embeds.to(z.dtype).expand(z.shape[0], -1, -1)
        kwargs = {"num_views": num_views}
        pred = unet(z, t, encoder_hidden_states=cond, cross_attention_kwargs=kwargs, return_dict=False)[0]
        a = self.alpha_bar
        if self.prediction_type == "epsilon":
            return (z - (1 - a) ** 0.5 * pred) / a**0.5
        if self.prediction_type == "v_prediction":
            return a**0.5 * z - (1 - a) ** 0.5 * pred
        return pred

    # ---------------------------------------------------------------- save / load
    def save_pretrained(self, folder: Union[str, Path]) -> None:
        """Write this project's format: the nvidia layout without text encoder, plus `prompt_embeds.safetensors`.

        `model_index.json`, `scheduler/`, `unet/`, `vae/` (decoder LoRA kept separate, peft-style, as in the
        public weights, unless the model was loaded merged) and the cached prompt embedding.
        """
        save_difix(self, folder)

    @classmethod
    def from_pretrained(
        cls,
        source: Union[str, Path],
        *,
        attention: str = "sdpa",
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> "DifixFixer":
        """Load from a Hugging Face id (`nvidia/difix`, `nvidia/difix_ref`) or a local folder, in either the
        public layout or this project's; `kwargs` are `difix_checkpoint.load_difix_parts`'s options
        (cache_dir, revision, merge_vae_lora, reference_attention, prompt, timestep, noise_start)."""
        return cls(**load_difix_parts(source, **kwargs), attention=attention).to(device=device, dtype=dtype)

    @classmethod
    def random(
        cls,
        size: str = "tiny",
        reference_attention: bool = False,
        lora_rank: int = 4,
        seed: int = 0,
        device: Union[str, torch.device] = "cpu",
    ) -> "DifixFixer":
        """A randomly initialised model ("tiny" for tests, "full" = SD-Turbo size) for timing and tests."""
        from diffusers import DDPMScheduler, UNet2DConditionModel

        if size not in ("tiny", "full"):
            raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            with torch.device(device):
                unet_cfg = tiny_unet_config() if size == "tiny" else sd_turbo_unet_config()
                vae_cfg = tiny_vae_config(lora_rank) if size == "tiny" else sd_turbo_vae_config(lora_rank)
                unet = UNet2DConditionModel(**unet_cfg)
                vae = DifixAutoencoderKL(**vae_cfg)
                embeds = torch.randn(1, 77, unet_cfg["cross_attention_dim"])
        finally:
            torch.random.set_rng_state(gen_state)
        scheduler = DDPMScheduler(**sd_turbo_scheduler_config())
        return cls(vae.eval(), unet.eval(), scheduler, embeds, reference_attention=reference_attention)

    def extra_repr(self) -> str:
        return json.dumps(
            {"timestep": self.timestep, "reference_attention": self.reference_attention, "prompt": self.prompt,
             "noise_start": self.noise_start}
        )
