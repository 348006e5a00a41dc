"""Data managers of the difix methods.

Both hold the real training views as nerfstudio does; the Difix3D progressive update adds pseudo views (fixed
renders of novel cameras) to them. difix-splatfacto samples whole images (`FullImageDatamanager`); difix-nerfacto
samples rays from images held in the main process (`VanillaDataManager`: nerfacto's default
`ParallelDataManager` caches images inside worker processes, where views added later would be invisible).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Type

from nerfstudio.data.datamanagers.base_datamanager import TDataset, VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig

__all__ = [
    "DifixFullImageDatamanager",
    "DifixFullImageDatamanagerConfig",
    "DifixVanillaDataManager",
    "DifixVanillaDataManagerConfig",
]


@dataclass
class DifixFullImageDatamanagerConfig(FullImageDatamanagerConfig):
    """Full-image data manager of difix-splatfacto."""

    _target: Type = field(default_factory=lambda: DifixFullImageDatamanager)


class DifixFullImageDatamanager(FullImageDatamanager, Generic[TDataset]):
    """Real training images, whole-image batches (pseudo views join here in the progressive update)."""

    config: DifixFullImageDatamanagerConfig


@dataclass
class DifixVanillaDataManagerConfig(VanillaDataManagerConfig):
    """Ray-sampling data manager of difix-nerfacto (images held in the main process)."""

    _target: Type = field(default_factory=lambda: DifixVanillaDataManager)


class DifixVanillaDataManager(VanillaDataManager, Generic[TDataset]):
    """Real training images, ray batches (pseudo views join here in the progressive update)."""

    config: DifixVanillaDataManagerConfig
