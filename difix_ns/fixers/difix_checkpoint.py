"""Difix checkpoint formats: the public `nvidia/difix` / `nvidia/difix_ref` layout, and this project's own.

Public layout (diffusers-style folder; what was checked is listed in `difix_vae.py` and below):
    model_index.json                 names the components; `vae` and (difix_ref) `unet` point at remote code
    scheduler/scheduler_config.json  DDPMScheduler
    text_encoder/config.json + weights, tokenizer/   CLIPTextModel, CLIPTokenizer (SD-Turbo's OpenCLIP-H)
    unet/config.json + diffusion_pytorch_model.safetensors   stock UNet2DConditionModel tensor names
        (difix_ref also ships `unet/unet_2d_condition.py`: same weights, self-attention over 2 views)
    vae/config.json (stock SD VAE config + `lora_rank`, `gamma`, `ignore_skip`)
    vae/diffusion_pytorch_model.safetensors   peft-style decoder LoRA keys, adapter `vae_skip`
The reference is detected from `model_index.json` (a `unet` entry whose library is not "diffusers") or from
the presence of `unet/unet_2d_condition.py`; pass `reference_attention=` to override. The remote code is never
run: the architecture is this project's (`difix_vae.py`, `reference_attention.py`).

Own layout (`DifixFixer.save_pretrained`): the same folders without `text_encoder/` and `tokenizer/`, plus
`prompt_embeds.safetensors` (the cached prompt embedding) and `model_index.json` with
`"_class_name": "DifixFixer"`, `prompt`, `timestep`, `noise_start`, `reference_attention`.

Hub ids are fetched with `huggingface_hub.snapshot_download`; when `HF_HUB_OFFLINE` is set only the local cache
is used. A local folder always wins over a hub id of the same spelling.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

from difix_ns.hub import is_offline as _is_offline  # noqa: F401 - fixers.config checks offline through it
from difix_ns.hub import snapshot_or_raise

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TIMESTEP",
    "HUB_FILE_PATTERNS",
    "check_difix_folder",
    "load_difix_parts",
    "resolve_difix_source",
    "save_difix",
]

DEFAULT_PROMPT = "remove degradation"
"""Difix's fixed prompt."""
DEFAULT_TIMESTEP = 199
"""Difix's single diffusion timestep."""

HUB_FILE_PATTERNS = [
    "model_index.json",
    "prompt_embeds.safetensors",
    "scheduler/*.json",
    "unet/*.json",
    "unet/*.safetensors",
    "vae/*.json",
    "vae/*.safetensors",
    "text_encoder/*.json",
    "text_encoder/*.safetensors",
    "tokenizer/*",
]
_OWN_CLASS = "DifixFixer"


# ------------------------------------------------------------------------------------------------ locating
def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def resolve_difix_source(
    source: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None, revision: Optional[str] = None
) -> Path:
    """Local folder for `source`: an existing folder, else a Hugging Face id fetched (or found in the cache)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"Difix checkpoint must be a folder, got a file: {path}")
        return path
    if not _looks_like_repo_id(str(source)):
        raise FileNotFoundError(f"Difix checkpoint folder not found and not a Hugging Face id: {source}")
    return snapshot_or_raise(
        str(source), setting="Difix checkpoint", revision=revision, cache_dir=cache_dir,
        allow_patterns=HUB_FILE_PATTERNS, error_type=FileNotFoundError,
    )  # fmt: skip


def _weights_file(folder: Path, stems: tuple[str, ...]) -> Optional[Path]:
    for stem in stems:
        for suffix in (".safetensors", ".fp16.safetensors", ".bin"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def check_difix_folder(folder: Path) -> dict[str, Any]:
    """Check the layout; raise `FileNotFoundError` listing everything missing. Returns `model_index.json`."""
    missing: list[str] = []
    for rel in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json"):
        if not (folder / rel).is_file():
            missing.append(rel)
    if _weights_file(folder / "unet", ("diffusion_pytorch_model",)) is None:
        missing.append("unet/diffusion_pytorch_model.safetensors")
    if _weights_file(folder / "vae", ("diffusion_pytorch_model",)) is None:
        missing.append("vae/diffusion_pytorch_model.safetensors")
    if not (folder / "prompt_embeds.safetensors").is_file():
        if not (folder / "text_encoder/config.json").is_file():
            missing.append("text_encoder/config.json")
        if _weights_file(folder / "text_encoder", ("model", "pytorch_model")) is None:
            missing.append("text_encoder/model.safetensors")
        tok = folder / "tokenizer"
        if not (tok / "tokenizer.json").is_file() and not (
            (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
        ):
            missing.append("tokenizer/vocab.json + tokenizer/merges.txt (or tokenizer/tokenizer.json)")
    if missing:
        raise FileNotFoundError(f"Difix checkpoint {folder} is incomplete: missing {', '.join(missing)}")
    return json.loads((folder / "model_index.json").read_text())


# ------------------------------------------------------------------------------------------------ parts
def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _load_vae(folder: Path, merge_lora: bool) -> Any:
    from difix_ns.fixers.difix_vae import ADAPTER_NAME, DifixAutoencoderKL, merge_lora_adapter

    config = json.loads((folder / "config.json").read_text())
    state = _load_state_dict(_weights_file(folder, ("diffusion_pytorch_model",)))  # type: ignore[arg-type]
    a_keys = [k for k in state if f".lora_A.{ADAPTER_NAME}." in k]
    accepted = set(inspect.signature(DifixAutoencoderKL.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if k in accepted}
    rank = int(state[a_keys[0]].shape[0]) if a_keys else 0
    if a_keys and int(kwargs.get("lora_rank", rank)) != rank:
        raise ValueError(f"vae/config.json says lora_rank={kwargs['lora_rank']} but the weights have rank {rank}")
    kwargs["lora_rank"] = rank
    with torch.device("meta"):
        vae = DifixAutoencoderKL(**kwargs)
    _assign_weights(
        vae, state, folder, f"{folder / 'diffusion_pytorch_model.safetensors'} does not match the Difix VAE"
    )
    if a_keys and merge_lora:
        merge_lora_adapter(vae, ADAPTER_NAME)
        vae.register_to_config(lora_rank=0)
    return vae


def _assign_weights(module: torch.nn.Module, state: dict, folder: Path, mismatch: str) -> None:
    """Load `state` into a meta-device `module` exactly: every tensor present, none left over, none left on meta."""
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{mismatch}: missing {len(result.missing_keys)} tensors {result.missing_keys[:6]}, "
            f"unexpected {len(result.unexpected_keys)} tensors {result.unexpected_keys[:6]}"
        )
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{folder}: tensors not found in the weights file: {left[:6]}")


def _load_unet(folder: Path) -> Any:
    """The stock diffusers UNet of `folder` (both layouts store it as diffusers writes it)."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{folder}: cannot load the UNet (config.json + weights): {err}") from err


def encode_prompt(folder: Path, prompt: str) -> torch.Tensor:
    """[1, L, D] last hidden state of the checkpoint's CLIP text encoder for `prompt` (run once, on CPU)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    ids = tokenizer(
        prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0].float()


def _uses_reference_attention(folder: Path, index: dict[str, Any]) -> bool:
    if index.get("_class_name") == _OWN_CLASS:
        return bool(index.get("reference_attention", False))
    entry = index.get("unet")
    custom_unet = isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] not in (None, "diffusers")
    return custom_unet or (folder / "unet" / "unet_2d_condition.py").is_file()


def _prompt_embeddings(folder: Path, index: dict, prompt: Optional[str]) -> Tuple[str, torch.Tensor]:
    """(prompt, its embedding): the stored embedding when the prompt is the stored one, else encoded with the
    folder's text encoder. `prompt` None = the stored prompt (this project's layout), else "remove degradation"."""
    stored_prompt = index.get("prompt", DEFAULT_PROMPT) if index.get("_class_name") == _OWN_CLASS else None
    prompt = prompt if prompt is not None else (stored_prompt or DEFAULT_PROMPT)
    embeds_file = folder / "prompt_embeds.safetensors"
    if embeds_file.is_file() and prompt == stored_prompt:
        from safetensors.torch import load_file

        return prompt, load_file(str(embeds_file))["prompt_embeds"]
    if (folder / "text_encoder").is_dir():
        return prompt, encode_prompt(folder, prompt)
    raise FileNotFoundError(
        f"{folder} stores the embedding of {stored_prompt!r} but no text_encoder/ to encode {prompt!r}"
    )


# ------------------------------------------------------------------------------------------------ API
def load_difix_parts(
    source: Union[str, Path],
    *,
    cache_dir: Optional[Union[str, Path]] = None,
    revision: Optional[str] = None,
    merge_vae_lora: bool = False,
    reference_attention: Optional[bool] = None,
    prompt: Optional[str] = None,
    timestep: Optional[int] = None,
    noise_start: Optional[bool] = None,
) -> dict:
    """The constructor arguments of a `DifixFixer` (vae, unet, scheduler, prompt_embeds, timestep,
    reference_attention, prompt, noise_start) read from a hub id or folder, in the public or this project's layout.
    `DifixFixer.from_pretrained` builds the fixer from them.

    Args:
        source: `nvidia/difix`, `nvidia/difix_ref`, another hub id, or a local folder.
        cache_dir: Hugging Face cache to use (default: the standard one).
        revision: hub revision (branch, tag or commit).
        merge_vae_lora: merge the decoder LoRA into plain weights (faster inference; not trainable as LoRA).
        reference_attention: mix reference views; None = detect from the checkpoint.
        prompt: prompt to encode; None = the stored one, else "remove degradation". Needs the text encoder
            unless it equals the prompt stored with `prompt_embeds.safetensors`.
        timestep: single-step timestep; None = stored, else 199.
        noise_start: start from the latent noised to the timestep's level (NiFi); None = stored, else False.
    """
    from diffusers import DDPMScheduler

    folder = resolve_difix_source(source, cache_dir=cache_dir, revision=revision)
    index = check_difix_folder(folder)
    prompt, embeds = _prompt_embeddings(folder, index, prompt)
    scheduler = DDPMScheduler.from_config(json.loads((folder / "scheduler/scheduler_config.json").read_text()))
    unet = _load_unet(folder / "unet")
    vae = _load_vae(folder / "vae", merge_vae_lora)
    if reference_attention is None:
        reference_attention = _uses_reference_attention(folder, index)
    return {
        "vae": vae.eval().requires_grad_(False),
        "unet": unet.eval().requires_grad_(False),
        "scheduler": scheduler,
        "prompt_embeds": embeds,
        "timestep": int(timestep if timestep is not None else index.get("timestep", DEFAULT_TIMESTEP)),
        "reference_attention": reference_attention,
        "prompt": prompt,
        "noise_start": bool(noise_start if noise_start is not None else index.get("noise_start", False)),
    }


def save_difix(fixer: Any, folder: Union[str, Path]) -> None:
    """Write `fixer` (a `DifixFixer`) in this project's layout (see the module docstring)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fixer.scheduler.save_pretrained(str(folder / "scheduler"))
    fixer.unet.save_pretrained(str(folder / "unet"))
    fixer.vae.save_pretrained(str(folder / "vae"))
    save_file(
        {"prompt_embeds": fixer.prompt_embeds.detach().float().cpu().contiguous()},
        str(folder / "prompt_embeds.safetensors"),
    )
    index = {
        "_class_name": _OWN_CLASS,
        "_difix_ns_format": 1,
        "prompt": fixer.prompt,
        "timestep": fixer.timestep,
        "noise_start": bool(getattr(fixer, "noise_start", False)),
        "reference_attention": fixer.reference_attention,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["difix_ns.fixers.difix_vae", "DifixAutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
