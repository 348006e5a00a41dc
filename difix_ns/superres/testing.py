"""A random Stable Diffusion x4 upscaler in the `stabilityai/stable-diffusion-x4-upscaler` folder layout, for tests
and CPU timing of the `sd-x4` back-end (no pretrained weight can be downloaded here).

Same classes and folder layout as the public checkpoint (written by `StableDiffusionUpscalePipeline.save_pretrained`):
`model_index.json`, `unet/` (7 input channels = 4 latent + 3 low-resolution image, class embeddings for the noise
level), `vae/` (3 levels: x4, scaling factor 0.08333), `text_encoder/`, `tokenizer/`, `scheduler/` (DDIM,
v-prediction) and `low_res_scheduler/` (DDPM), with tiny widths. Its outputs mean nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

__all__ = ["write_tiny_upscaler"]


def write_tiny_upscaler(folder: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random upscaler checkpoint into `folder` and return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from difix_ns.fixers.testing import make_char_tokenizer_files, text_encoder_config

    folder = Path(folder)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vocab_size = make_char_tokenizer_files(folder / "tokenizer")  # save_pretrained rewrites them there
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        text_cfg = text_encoder_config("tiny", vocab_size)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4,
            cross_attention_dim=text_cfg["hidden_size"], norm_num_groups=8, num_class_embeds=1000,
        )  # fmt: skip
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            sample_size=32, scaling_factor=0.08333,
        )  # fmt: skip
        pipe = StableDiffusionUpscalePipeline(
            vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)), tokenizer=tokenizer, unet=unet,
            low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
            scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02,
                                    prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False),
            max_noise_level=350,
        )  # fmt: skip
        pipe.save_pretrained(str(folder))
    finally:
        torch.random.set_rng_state(rng_state)
    return folder
