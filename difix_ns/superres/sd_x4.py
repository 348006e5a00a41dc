"""The `sd-x4` SR back-end: the Stable Diffusion x4 upscaler (Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022; diffusers `StableDiffusionUpscalePipeline`, the
`stabilityai/stable-diffusion-x4-upscaler` layout) with the latent alternation of 3DSR (ICCV 2025; public code:
Consistent3DSR/3DSR).

One diffusion latent per training view is kept across the K rounds; round r (0-based) works at timestep t_r, the
K timesteps evenly spaced from T-1 down to 0 (K=4, T=1000: 999, 666, 333, 0, as 3DSR). In round r:
- the VAE encoding (its posterior mean: deterministic) of the view's current HR render takes the place of the
  predicted x0 in the DDPM posterior:
  x_{t_r} = c1 * x0_render + c2 * x_{t_{r-1}} + sigma * eps (`posterior_step`); in the first round, where there
  is no x_{t_{r-1}}, x_{t_0} is drawn from q(x_{t_0} | x0_render) (`q_sample`);
- the UNet predicts x0 from x_{t_r}, conditioned on the LR view (the upscaler's noised low-resolution image) and
  the prompt (3DSR: empty, no classifier-free guidance); its decoding is the round's SR image.
Without a render (`condition_on_render` off) the previous round's predicted x0 takes its place and the first
latent is pure noise: the upscaler's own K-step ancestral sampling, per frame (the no-alternation baseline).

Sizes: the upscaler's VAE works at `vae_scale` (4) times the latent size, and the low-resolution condition has the
latent size. The HR size is rounded up to a multiple of `vae_scale` for the diffusion (render resized to it, output
resized back), and the LR view is resized to the latent size: for factor 4 (the upscaler's native factor) that is
the LR view itself; for other factors the condition is the LR view resampled so that the output has the HR size.

State on disk: after each view's round, {round, timestep, latent, x0} go to
`<folder>/latents/round-RR/view-IIII.pt` (the pipeline's `sr3d/backend`); `resume(r)` reloads round r's files,
and every draw uses a generator seeded by (seed, view, round), so a resumed run continues bit-identically (on the
same device and kernels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from difix_ns.errors import UserError
from difix_ns.hub import snapshot_or_raise
from difix_ns.superres.base import SuperResBackend
from difix_ns.superres.config import SdX4SuperResConfig
from difix_ns.superres.ops import downsample, upsample

__all__ = ["SdX4Backend", "posterior_step", "predicted_x0", "q_sample", "resolve_upscaler_source", "round_timesteps"]

LATENTS_FOLDER = "latents"
"""Sub-folder of the back-end's folder with the per-view latents of each round."""

_HUB_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "tokenizer/*",
                 "*/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]  # fmt: skip
"""Files of the upscaler a hub snapshot needs (not the 3.5 GB original .ckpt, not the fp16 variants)."""


# ------------------------------------------------------------------------------------------------ schedule math
def round_timesteps(num_train_timesteps: int, rounds: int) -> List[int]:
    """K timesteps evenly spaced from T-1 down to 0 (K=4, T=1000: [999, 666, 333, 0]); one round: [T-1]."""
    if rounds < 1 or num_train_timesteps < 1:
        raise ValueError(f"need rounds >= 1 and num_train_timesteps >= 1, got {rounds}, {num_train_timesteps}")
    last = num_train_timesteps - 1
    if rounds == 1:
        return [last]
    return [round(last * (rounds - 1 - r) / (rounds - 1)) for r in range(rounds)]


def q_sample(
    x0: Float[Tensor, "B C h w"], t: int, alphas_cumprod: Float[Tensor, " T"], noise: Float[Tensor, "B C h w"]
) -> Float[Tensor, "B C h w"]:
    """A draw from q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given noise."""
    a = float(alphas_cumprod[t])
    return a**0.5 * x0 + (1.0 - a) ** 0.5 * noise


def posterior_step(
    x0: Float[Tensor, "B C h w"],
    x_t: Float[Tensor, "B C h w"],
    t: int,
    s: int,
    alphas_cumprod: Float[Tensor, " T"],
    noise: Float[Tensor, "B C h w"],
) -> Tuple[Float[Tensor, "B C h w"], Dict[str, float]]:
    """A draw from the DDPM posterior q(x_s | x_t, x0) for s < t (Ho et al. 2020, eq. 7, across a skip:
    alpha_{t|s} = abar_t / abar_s): x_s = c1 x0 + c2 x_t + sigma eps. Returns (x_s, meta {c1, c2, sigma})."""
    if not 0 <= s < t < len(alphas_cumprod):
        raise ValueError(f"need 0 <= s < t < {len(alphas_cumprod)}, got s={s}, t={t}")
    abar_t, abar_s = float(alphas_cumprod[t]), float(alphas_cumprod[s])
    beta = 1.0 - abar_t / abar_s
    c1 = abar_s**0.5 * beta / (1.0 - abar_t)
    c2 = (abar_t / abar_s) ** 0.5 * (1.0 - abar_s) / (1.0 - abar_t)
    sigma = max((1.0 - abar_s) / (1.0 - abar_t) * beta, 1e-20) ** 0.5  # DDPM's "fixed_small" variance
    return c1 * x0 + c2 * x_t + sigma * noise, {"c1": c1, "c2": c2, "sigma": sigma}


def predicted_x0(
    model_output: Float[Tensor, "B C h w"],
    x_t: Float[Tensor, "B C h w"],
    t: int,
    alphas_cumprod: Float[Tensor, " T"],
    prediction_type: str,
) -> Float[Tensor, "B C h w"]:
    """x0 from the UNet's output at timestep t (epsilon, v_prediction or sample parameterisation)."""
    a = float(alphas_cumprod[t])
    if prediction_type == "epsilon":
        return (x_t - (1.0 - a) ** 0.5 * model_output) / a**0.5
    if prediction_type == "v_prediction":
        return a**0.5 * x_t - (1.0 - a) ** 0.5 * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r}")


def _resize(images: Float[Tensor, "B 3 H W"], size: Tuple[int, int]) -> Float[Tensor, "B 3 h w"]:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if size[0] <= images.shape[-2] and size[1] <= images.shape[-1]:
        return downsample(images, size)
    return upsample(images, size)


# ------------------------------------------------------------------------------------------------ checkpoint
def resolve_upscaler_source(source: str, cache_dir: Optional[Path] = None) -> Path:
    """Local folder of an upscaler checkpoint: the folder itself, or the hub id's snapshot (with HF_HUB_OFFLINE
    set: from the local cache only). Raises `UserError` naming `superres.sd_x4.checkpoint` when it is missing."""
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(f"superres.sd_x4.checkpoint folder {path} has no model_index.json (diffusers layout)")
        return path
    parts = str(source).split("/")
    if len(parts) != 2 or not all(parts) or str(source).startswith((".", "~")):
        raise UserError(f"superres.sd_x4.checkpoint {source!r} is neither a folder nor a Hugging Face id")
    folder = snapshot_or_raise(
        str(source), setting="superres.sd_x4.checkpoint", cache_dir=cache_dir, allow_patterns=_HUB_PATTERNS
    )
    if not (Path(folder) / "model_index.json").is_file():
        raise UserError(f"superres.sd_x4.checkpoint {source!r}: the snapshot {folder} has no model_index.json")
    return Path(folder)


def _load_upscaler(config: SdX4SuperResConfig) -> Tuple[Any, torch.device, torch.dtype]:
    """(the StableDiffusionUpscalePipeline in eval mode, device, UNet dtype); VAE and text encoder stay fp32."""
    from diffusers import StableDiffusionUpscalePipeline

    folder = resolve_upscaler_source(config.checkpoint, config.cache_dir)
    pipe = StableDiffusionUpscalePipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, watermarker=None
    )
    if not hasattr(pipe.scheduler, "alphas_cumprod"):
        raise UserError(f"superres.sd_x4.checkpoint: scheduler {type(pipe.scheduler).__name__} has no alphas_cumprod")
    latent_channels = pipe.vae.config.latent_channels
    if pipe.unet.config.in_channels != latent_channels + 3:
        raise UserError(
            f"superres.sd_x4.checkpoint: UNet in_channels {pipe.unet.config.in_channels} != VAE latent channels "
            f"{latent_channels} + 3 (the low-resolution image): not an x4-upscaler checkpoint"
        )
    if config.noise_level > pipe.config.max_noise_level:
        limit = pipe.config.max_noise_level
        raise ValueError(f"superres.sd_x4.noise_level {config.noise_level} is above the checkpoint's maximum {limit}")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if config.device == "auto" else config.device)
    # CPU always runs fp32 (half-precision convolutions there are slow or missing)
    names = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtype = names[config.precision] if device.type == "cuda" else torch.float32
    pipe.to(device)
    if dtype != torch.float32:
        pipe.unet.to(dtype)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.eval().requires_grad_(False)
    return pipe, device, dtype


class SdX4Backend(SuperResBackend):
    """The x4 upscaler with one latent per training view across rounds (see module docstring)."""

    name = "sd-x4"

    def __init__(self, config: SdX4SuperResConfig, rounds: int) -> None:
        config.validate()
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"superres.rounds must be a positive integer, got {rounds!r}")
        self.config, self.rounds = config, rounds
        self.folder: Optional[Path] = None
        self.pipe: Any = None
        self.state: Dict[int, Dict[str, Any]] = {}
        """view index -> {"round": rounds done, "timestep", "latent": x_t, "x0": predicted x0} (CPU, fp32)."""

    # ---------------------------------------------------------------- set-up and state
    def prepare(self, lr_views: List[Float[Tensor, "3 h w"]], factor: int, folder: Path) -> None:
        """Load the upscaler; the latents go to `folder/latents`."""
        self.load(folder)

    def load(self, folder: Path) -> None:
        """Load the upscaler (from the settings' checkpoint) and use `folder` for the latents."""
        self.folder = Path(folder)
        if self.pipe is None:
            self.pipe, self.device, self.dtype = _load_upscaler(self.config)
            self.prompt_embeds = self.pipe.encode_prompt(self.config.prompt, self.device, 1, False)[0].to(self.dtype)
            self.alphas_cumprod = self.pipe.scheduler.alphas_cumprod.double().cpu()
            self.timesteps = round_timesteps(len(self.alphas_cumprod), self.rounds)
            self.vae_scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def resume(self, completed_rounds: int) -> None:
        """Forget the in-memory latents and reload those saved after round `completed_rounds` (0: fresh start)."""
        self.state = {}
        if completed_rounds == 0:
            return
        if self.folder is None:
            raise RuntimeError("the sd-x4 back-end has no folder: call prepare() or load() first")
        folder = self.folder / LATENTS_FOLDER / f"round-{completed_rounds:02d}"
        files = sorted(folder.glob("view-*.pt"))
        if not files:
            raise FileNotFoundError(f"sd-x4: no latents of round {completed_rounds} in {folder}: cannot resume")
        for file in files:
            self.state[int(file.stem.split("-")[1])] = torch.load(file, map_location="cpu", weights_only=True)

    def _save(self, view: int) -> None:
        state = self.state[view]
        folder = self.folder / LATENTS_FOLDER / f"round-{state['round']:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / f"view-{view:04d}.pt")

    # ---------------------------------------------------------------- diffusion pieces
    def _generator(self, view: int, round_index: int) -> torch.Generator:
        # seeded by (seed, view, round): a resumed run draws the same noise (rounds < 1009)
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + view * 1_009 + round_index) % 2**63)

    @torch.no_grad()
    def _encode(self, images: Float[Tensor, "1 3 H W"]) -> Float[Tensor, "1 C h w"]:
        vae = self.pipe.vae
        z = vae.encode(images.to(self.device, torch.float32) * 2 - 1).latent_dist.mode()
        return (z * vae.config.scaling_factor).float().cpu()

    @torch.no_grad()
    def _decode(self, z: Float[Tensor, "1 C h w"]) -> Float[Tensor, "1 3 H W"]:
        vae = self.pipe.vae
        x = vae.decode(z.to(self.device, torch.float32) / vae.config.scaling_factor, return_dict=False)[0]
        return (x.float() / 2 + 0.5).clamp(0, 1).cpu()

    @torch.no_grad()
    def _predict_x0(
        self, x: Float[Tensor, "1 C h w"], t: int, lr: Float[Tensor, "1 3 h w"], generator: torch.Generator
    ) -> Float[Tensor, "1 C h w"]:
        """The UNet's x0 from x_t, conditioned on the noised LR image (at the latent size) and the prompt."""
        cond = _resize(lr.float().cpu(), tuple(x.shape[-2:])) * 2 - 1
        level = torch.tensor([self.config.noise_level], dtype=torch.long)
        cond = self.pipe.low_res_scheduler.add_noise(cond, torch.randn(cond.shape, generator=generator), level)
        inputs = torch.cat([x, cond], dim=1).to(self.device, self.dtype)
        t_in = torch.tensor([t], dtype=torch.long, device=self.device)
        out = self.pipe.unet(
            inputs, t_in, encoder_hidden_states=self.prompt_embeds, class_labels=level.to(self.device),
            return_dict=False,
        )[0]  # fmt: skip
        return predicted_x0(out.float().cpu(), x, t, self.alphas_cumprod, self.pipe.scheduler.config.prediction_type)

    # ---------------------------------------------------------------- one round of one view
    def _next_latent(
        self, view: int, r: int, x0: Optional[Tensor], shape: Tuple[int, ...], generator: torch.Generator
    ) -> Float[Tensor, "1 C h w"]:
        """x_{t_r} of the view's round r: the posterior draw around x0 (None: the previous round's prediction),
        or in the first round a draw from q(x_{t_0} | x0) (None: pure noise)."""
        state = self.state.get(view)
        t, noise = self.timesteps[r], torch.randn(shape, generator=generator)
        if state is None:
            return noise if x0 is None else q_sample(x0, t, self.alphas_cumprod, noise)
        if tuple(state["latent"].shape) != tuple(shape):
            raise ValueError(f"sd-x4: view {view}'s latent {tuple(state['latent'].shape)} does not fit {shape}")
        x0 = state["x0"] if x0 is None else x0
        return posterior_step(x0, state["latent"], self.timesteps[r - 1], t, self.alphas_cumprod, noise)[0]

    def _upscale_view(
        self, lr: Float[Tensor, "1 3 h w"], render: Optional[Float[Tensor, "1 3 H W"]], size: tuple, view: int
    ) -> Float[Tensor, "1 3 H W"]:
        s = self.vae_scale
        work = (-(-size[0] // s) * s, -(-size[1] // s) * s)  # HR size rounded up to the VAE's scale
        shape = (1, self.pipe.vae.config.latent_channels, work[0] // s, work[1] // s)
        x0_render = None if render is None else self._encode(_resize(render.float().cpu(), work))
        r = int(self.state[view]["round"]) if view in self.state else 0
        if r >= self.rounds:
            raise ValueError(f"sd-x4: view {view} has had all {self.rounds} rounds of the schedule")
        generator, t = self._generator(view, r), self.timesteps[r]
        x = self._next_latent(view, r, x0_render, shape, generator)
        x0 = self._predict_x0(x, t, lr, generator)
        self.state[view] = {"round": r + 1, "timestep": t, "latent": x, "x0": x0}
        self._save(view)
        return _resize(self._decode(x0), tuple(size))

    def upscale(
        self,
        lr: Float[Tensor, "B 3 h w"],
        render: Optional[Float[Tensor, "B 3 H W"]],
        size: tuple,
        indices: Optional[Sequence[int]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        if self.pipe is None or self.folder is None:
            raise RuntimeError("the sd-x4 SR back-end is not loaded yet: call prepare() (or load()) first")
        if indices is None or len(indices) != lr.shape[0]:
            raise ValueError("the sd-x4 back-end keeps one latent per training view: pass one index per LR view")
        outs = [
            self._upscale_view(lr[i : i + 1], None if render is None else render[i : i + 1], size, int(view))
            for i, view in enumerate(indices)
        ]
        return torch.cat(outs).to(lr.device)
