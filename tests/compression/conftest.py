"""One short difix-splatfacto run (ns-train, as a user runs it) shared by the compression tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tool_runs import run_tool

ITERATIONS = 12


@pytest.fixture(scope="session")
def splat_run(synth_scene, tmp_path_factory) -> Path:
    """config.yml of a short difix-splatfacto run (fixer stages off)."""
    tmp = tmp_path_factory.mktemp("compress_run")
    run_tool(["ns-train", "difix-splatfacto", f"--data={synth_scene}", f"--output-dir={tmp / 'out'}",
              "--experiment-name=e", "--timestamp=t", f"--max-num-iterations={ITERATIONS}",
              f"--steps-per-save={ITERATIONS}", "--vis=tensorboard",
              "--pipeline.model.fixer.backend=identity"], tmp)  # fmt: skip
    return tmp / "out" / "e" / "difix-splatfacto" / "t" / "config.yml"


@pytest.fixture(scope="session")
def scene(splat_run):
    """The run read and scored once (what every compression of it starts from)."""
    from difix_ns.compression.command import read_scene

    return read_scene(splat_run)
