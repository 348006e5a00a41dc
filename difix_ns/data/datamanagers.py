"""Data managers of the difix methods.

Both hold the real training views as nerfstudio does; the Difix3D progressive update adds pseudo views (fixed
renders of novel cameras) to them. difix-splatfacto samples whole images (`FullImageDatamanager`); difix-nerfacto
samples rays from images held in the main process (`VanillaDataManager`: nerfacto's default
`ParallelDataManager` caches images inside worker processes, where views added later would be invisible).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Optional, Type

from nerfstudio.data.datamanagers.base_datamanager import (
    DataManagerConfig,
    TDataset,
    VanillaDataManager,
    VanillaDataManagerConfig,
)
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

__all__ = [
    "check_data_path",
    "DifixFullImageDatamanager",
    "DifixFullImageDatamanagerConfig",
    "DifixVanillaDataManager",
    "DifixVanillaDataManagerConfig",
]


def check_data_path(config: DataManagerConfig) -> None:
    """Fail early, with the path and a way out, when `--data` points at nothing usable."""
    data: Optional[Path] = config.data if config.data is not None else getattr(config.dataparser, "data", None)
    if data is None:
        return
    data = Path(data)
    hint = "Give --data a nerfstudio dataset folder (e.g. from ns-process-data, or `difix-ns synth --out DIR`)."
    if not data.exists():
        raise FileNotFoundError(f"data folder {data} does not exist. {hint}")
    if isinstance(config.dataparser, NerfstudioDataParserConfig) and data.is_dir() and not (data / "transforms.json").is_file():
        raise FileNotFoundError(f"data folder {data} has no transforms.json. {hint}")


@dataclass
class DifixFullImageDatamanagerConfig(FullImageDatamanagerConfig):
    """Full-image data manager of difix-splatfacto."""

    _target: Type = field(default_factory=lambda: DifixFullImageDatamanager)


class DifixFullImageDatamanager(FullImageDatamanager, Generic[TDataset]):
    """Real training images, whole-image batches (pseudo views join here in the progressive update)."""

    config: DifixFullImageDatamanagerConfig

    def __init__(self, config: DifixFullImageDatamanagerConfig, *args, **kwargs) -> None:
        check_data_path(config)
        super().__init__(config, *args, **kwargs)


@dataclass
class DifixVanillaDataManagerConfig(VanillaDataManagerConfig):
    """Ray-sampling data manager of difix-nerfacto (images held in the main process)."""

    _target: Type = field(default_factory=lambda: DifixVanillaDataManager)


class DifixVanillaDataManager(VanillaDataManager, Generic[TDataset]):
    """Real training images, ray batches (pseudo views join here in the progressive update)."""

    config: DifixVanillaDataManagerConfig

    def __init__(self, config: DifixVanillaDataManagerConfig, *args, **kwargs) -> None:
        check_data_path(config)
        super().__init__(config, *args, **kwargs)
