"""Shared fixtures: an offline machine, and a small synthetic scene."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub cache: what a fresh machine without internet access looks like."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "torch_home"


@pytest.fixture(scope="session")
def synth_scene(tmp_path_factory) -> Path:
    """The default synthetic scene at a small resolution (written once per test session)."""
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    out = tmp_path_factory.mktemp("synth") / "scene"
    return make_synthetic_scene(SynthConfig(out=out, seed=0, resolution=48))
