"""Shared fixtures for the fixer tests: tiny random checkpoints in the public Difix layout (written once)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def nvidia_difix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difix_ns.fixers.testing import write_nvidia_layout

    return write_nvidia_layout(tmp_path_factory.mktemp("ckpt") / "difix", reference=False, seed=0)


@pytest.fixture(scope="session")
def nvidia_difix_ref_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difix_ns.fixers.testing import write_nvidia_layout

    return write_nvidia_layout(tmp_path_factory.mktemp("ckpt") / "difix_ref", reference=True, seed=1)
