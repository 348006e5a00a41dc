"""`FixerConfig`: build any fixer back-end by name + checkpoint. Light module: heavy imports happen in `setup()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Type

from difix_ns.errors import UserError

__all__ = ["DEFAULT_DIFIX", "FixerConfig", "FixerSettingsError", "build_fixer", "check_fixer_config", "resolve_auto"]

DEFAULT_DIFIX = "nvidia/difix_ref"
"""The Difix checkpoint the `auto` back-end uses when it is in the local Hugging Face cache."""


class FixerSettingsError(UserError):
    """Fixer settings that cannot work (named in the message); raised before any data or model is built."""


def _check_nafnet_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FixerSettingsError(f"NAFNet checkpoint folder not found: {folder}")
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any(p.name.startswith("diffusion_pytorch_model") for p in folder.iterdir()):
        missing.append("diffusion_pytorch_model.safetensors")
    if missing:
        raise FixerSettingsError(f"NAFNet checkpoint folder {folder} is incomplete: missing {', '.join(missing)}")


def _check_difix_source(config: "FixerConfig") -> None:
    """A local folder must be complete; a hub id must be in the local cache when offline (else it is fetched at
    first use)."""
    from difix_ns.fixers.difix_checkpoint import _is_offline, check_difix_folder, resolve_difix_source

    source = str(config.checkpoint)
    try:
        if Path(source).expanduser().exists() or _is_offline():
            check_difix_folder(resolve_difix_source(source, cache_dir=config.cache_dir))
    except FileNotFoundError as err:
        raise FixerSettingsError(str(err)) from None


def resolve_auto(config: "FixerConfig") -> "tuple[FixerConfig, str]":
    """The back-end `auto` stands for, and why: Difix with `nvidia/difix_ref` when that checkpoint is complete in
    the local Hugging Face cache (nothing is downloaded), else `self` (a NAFNet trained on the scene's own training
    views). Other back-ends are returned as they are."""
    from dataclasses import replace

    if config.backend != "auto":
        return config, f"--pipeline.model.fixer.backend {config.backend}"
    from difix_ns.fixers.difix_checkpoint import check_difix_folder

    try:
        from huggingface_hub import snapshot_download

        from difix_ns.fixers.difix_checkpoint import HUB_FILE_PATTERNS

        folder = snapshot_download(
            DEFAULT_DIFIX, cache_dir=None if config.cache_dir is None else str(config.cache_dir),
            local_files_only=True, allow_patterns=HUB_FILE_PATTERNS,
        )  # fmt: skip
        check_difix_folder(Path(folder))
    except Exception:  # noqa: BLE001 - not in the cache (or incomplete there): the offline choice
        return replace(config, backend="self"), (
            f"{DEFAULT_DIFIX} is not in the local Hugging Face cache, so a NAFNet is trained on this scene's training "
            "views (choose with --pipeline.model.fixer.backend difix|nafnet|self|identity)"
        )
    return replace(config, backend="difix", checkpoint=DEFAULT_DIFIX), f"{DEFAULT_DIFIX} is in the local cache"


def check_fixer_config(config: "FixerConfig") -> None:
    """Check `config` in seconds, without loading any weights; raise `FixerSettingsError` naming the problem."""
    if config.backend not in ("auto", "difix", "nafnet", "self", "identity"):
        raise FixerSettingsError(
            f"unknown fixer backend {config.backend!r}; choose auto, difix, nafnet, self or identity"
        )
    if config.backend == "difix":
        if config.checkpoint is None:
            raise FixerSettingsError(
                "the difix back-end needs a checkpoint (--pipeline.model.fixer.checkpoint): a hub id such as "
                "'nvidia/difix' / 'nvidia/difix_ref' or a local folder"
            )
        _check_difix_source(config)
    elif config.backend == "nafnet" and config.checkpoint is None and not config.random_init:
        raise FixerSettingsError(
            "the nafnet back-end needs a checkpoint (--pipeline.model.fixer.checkpoint: a folder written by "
            "`difix-ns train-fixer`); an untrained NAFNet only degrades images (random_init=True uses one on purpose)"
        )
    elif config.backend in ("nafnet", "self") and config.checkpoint is not None:
        _check_nafnet_folder(Path(config.checkpoint))


def build_fixer(config: "FixerConfig") -> Any:
    """Construct the `Fixer` described by `config` (see `FixerConfig`)."""
    import torch

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if config.device == "auto" else config.device)
    config = resolve_auto(config)[0]
    if config.backend == "identity":
        from difix_ns.fixers.base import IdentityFixer

        fixer: Any = IdentityFixer()
    elif config.backend == "self" and config.checkpoint is None:
        raise ValueError(
            "the self back-end is a NAFNet trained on a scene's own training views: difix-splatfacto and "
            "difix-nerfacto train it before their first training step (settings: --pipeline.self-fixer.*); "
            "elsewhere give the checkpoint folder of a trained one"
        )
    elif config.backend in ("nafnet", "self"):
        from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer

        if config.checkpoint is None:
            check_fixer_config(config)  # an untrained NAFNet only on purpose (random_init)
            fixer = NAFNetFixer(NAFNet(width=config.nafnet_width, use_reference=config.nafnet_use_reference))
        else:
            fixer = NAFNetFixer.from_pretrained(config.checkpoint)
    elif config.backend == "difix":
        from difix_ns.fixers.difix import DifixFixer

        if config.checkpoint is None:
            raise ValueError(
                "the difix back-end needs a checkpoint: a hub id such as 'nvidia/difix' / 'nvidia/difix_ref' "
                "or a local folder"
            )
        fixer = DifixFixer.from_pretrained(
            str(config.checkpoint),
            cache_dir=config.cache_dir,
            merge_vae_lora=config.merge_vae_lora,
            reference_attention=config.reference_attention,
            prompt=config.prompt,
            timestep=config.timestep,
            noise_start=config.noise_start,
        )
    else:
        raise ValueError(f"unknown fixer backend {config.backend!r}; choose difix, nafnet, self or identity")
    fixer = fixer.to(device).eval()
    return fixer.configure(
        chunk_size=config.chunk_size,
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
    )


@dataclass
class FixerConfig:
    """Which image fixer to use and how to run it. `setup()` returns a ready `Fixer` in eval mode."""

    _target: Type = field(default_factory=lambda: build_fixer)
    """Factory called by `setup()` (nerfstudio convention; here a function dispatching on `backend`)."""
    backend: Literal["auto", "difix", "nafnet", "self", "identity"] = "difix"
    """Fixer back-end: single-step Difix, the small NAFNet restorer, `self` (a NAFNet the method trains on the
    scene's own training views before its first training step), identity (no change), or auto (Difix with
    nvidia/difix_ref when it is in the local Hugging Face cache, else self)."""
    checkpoint: Optional[str] = None
    """Difix: hub id (nvidia/difix, nvidia/difix_ref) or folder. NAFNet: folder from save_pretrained (None only
    with random_init). Ignored by identity."""
    device: str = "auto"
    """Device for the fixer: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision on CUDA (auto = bf16, or fp16 without bf16 support); CPU always runs fp32."""
    channels_last: bool = True
    """Use channels-last memory format for the convolutional networks."""
    compile: bool = False
    """Run the main network through torch.compile (first call is slow)."""
    chunk_size: int = 4
    """Most images per forward pass; halved automatically on an out-of-memory error."""
    cache_dir: Optional[Path] = None
    """Hugging Face cache folder for hub ids (default: the standard cache; HF_HUB_OFFLINE is honoured)."""
    merge_vae_lora: bool = True
    """Difix: merge the VAE decoder LoRA into plain weights at load time (faster, same output)."""
    reference_attention: Optional[bool] = None
    """Difix: mix reference views in self-attention; None = detect from the checkpoint (difix_ref)."""
    prompt: Optional[str] = None
    """Difix: prompt (None = the checkpoint's, else "remove degradation"); encoded once at load time."""
    timestep: Optional[int] = None
    """Difix: the single diffusion timestep (None = the checkpoint's, else 199)."""
    noise_start: Optional[bool] = None
    """Difix: noise the encoded render to the timestep's level first (NiFi's intermediate t0 start; set `timestep`
    to t0) instead of Difix's no-noise step. None = the checkpoint's (saved by `train-fixer
    --difix-noise-start`), else False."""
    random_init: bool = False
    """NAFNet without checkpoint: use an untrained network on purpose (tests, timing); otherwise it is an error."""
    nafnet_width: int = 16
    """NAFNet without checkpoint: channels at full resolution."""
    nafnet_use_reference: bool = False
    """NAFNet without checkpoint: add the reference-view input."""

    def check(self) -> None:
        """Raise `FixerSettingsError` now if these settings cannot build a fixer (no weights are loaded)."""
        check_fixer_config(self)

    def setup(self, **kwargs: Any) -> Any:
        """Build the fixer (`kwargs` override fields of this config for this call only)."""
        from dataclasses import replace

        return self._target(replace(self, **kwargs) if kwargs else self)
