"""Settings shared by the difix method definitions."""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig

__all__ = ["default_machine"]


def default_machine() -> MachineConfig:
    """Train on CUDA when there is a GPU, else on the CPU (nerfstudio's default would fail without a GPU)."""
    return MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu")
