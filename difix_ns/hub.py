"""Hugging Face Hub snapshots: one place that fetches a hub id (or, with `HF_HUB_OFFLINE` set, finds it in the local
cache) and turns a failure into a message saying what the user can do. `huggingface_hub` is imported lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Type, Union

from difix_ns.errors import UserError

__all__ = ["is_offline", "snapshot_or_raise"]

_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` asks for the local cache only (the values huggingface_hub accepts)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE_VALUES


def snapshot_or_raise(
    source: str,
    *,
    setting: str,
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    allow_patterns: Optional[Sequence[str]] = None,
    error_type: Type[Exception] = UserError,
) -> Path:
    """Local folder of the snapshot of hub id `source` (from the local cache only when offline). Any failure is
    raised as `error_type`, naming `setting`, `source`, where it was looked for and how to get it."""
    from huggingface_hub import snapshot_download

    offline = is_offline()
    try:
        folder = snapshot_download(
            repo_id=str(source),
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            local_files_only=offline,
            allow_patterns=None if allow_patterns is None else list(allow_patterns),
        )
    except Exception as err:  # noqa: BLE001 - re-raised with what the user can do
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face Hub"
        reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # its first sentence: the rest is API advice
        cause = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        raise error_type(
            f"{setting} {source!r} could not be taken from {where} ({cause}). Download it where there is network "
            f"(`huggingface-cli download {source}`) or pass a local folder."
        ) from err
    return Path(folder)
