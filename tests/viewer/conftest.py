"""Fixtures of the tests of what a user watches of a trained run (the viewer, ns-render videos): a tiny trained
difix-splatfacto run, and nerfstudio's viewer serving it.

The viewer is started from code exactly as `ns-viewer` starts it (`eval_setup`, nerfstudio's `Viewer`, the local
writer, `init_scene`, `update_scene`), in this process, so that the tests can read the model's state and record
every render; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

from difix_ns.fixers.base import IdentityFixer

BIN = Path(sys.executable).parent


class InvertingFixer(IdentityFixer):
    """A stand-in fixer that visibly changes every image (1 - x) and takes a fixer-like 20 ms."""

    supports_refs = False

    def _run(self, images: torch.Tensor, refs=None) -> torch.Tensor:
        time.sleep(0.02)
        return 1.0 - images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: List[str], cwd: Path) -> None:
    env = {**os.environ, "TORCH_HOME": str(cwd / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def train_tiny_splatfacto(folder: Path, iterations: int = 5) -> Path:
    """`difix-ns synth` (48 px) and a short `ns-train difix-splatfacto`; returns the run's config.yml."""
    folder.mkdir(parents=True, exist_ok=True)
    _run([str(BIN / "difix-ns"), "synth", f"--out={folder / 'scene'}", "--resolution=48"], folder)
    _run(
        [
            str(BIN / "ns-train"), "difix-splatfacto", f"--data={folder / 'scene'}", f"--output-dir={folder / 'out'}",
            "--experiment-name=e", "--timestamp=t", f"--max-num-iterations={iterations}",
            f"--steps-per-save={iterations}", "--vis=tensorboard",
            "--pipeline.model.fixer.backend=identity",  # cheap and offline; the viewer tests set their own fixer
        ],
        folder,
    )
    return folder / "out" / "e" / "difix-splatfacto" / "t" / "config.yml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """config.yml of a 5-step difix-splatfacto run on a 48 px synthetic scene."""
    return train_tiny_splatfacto(tmp_path_factory.mktemp("viewer_run"))


class RenderLog:
    """Every finished viewer render of the model: (time, height, width, post-processing on)."""

    def __init__(self, model) -> None:
        self.renders: List[Tuple[float, int, int, bool]] = []
        self._lock = threading.Lock()
        inner = model.get_outputs_for_camera

        def get_outputs_for_camera(camera, obb_box=None):
            outputs = inner(camera, obb_box=obb_box)
            with self._lock:
                self.renders.append(
                    (time.monotonic(), int(camera.height), int(camera.width), model.postprocess_enabled)
                )
            return outputs

        model.get_outputs_for_camera = get_outputs_for_camera

    def since(self, start: float) -> List[Tuple[float, int, int, bool]]:
        with self._lock:
            return [r for r in self.renders if r[0] >= start]


@pytest.fixture(scope="module")
def served(tiny_run):
    """nerfstudio's viewer on 127.0.0.1 serving the tiny run, post-processing initially off, with a fixer that
    inverts colours; yields (viewer, model, url, render log). One per test module, stopped after it."""
    from nerfstudio.utils.eval_utils import eval_setup  # first: importing nerfstudio's writer first is circular
    from nerfstudio.viewer.viewer import Viewer
    from nerfstudio.utils import writer

    config, pipeline, _, step = eval_setup(tiny_run, test_mode="test")
    model = pipeline.model
    model.set_fixer(InvertingFixer())
    model.viewer_postprocess.value = False  # before install: the checkbox's initial state
    config.viewer.websocket_host = "127.0.0.1"
    config.viewer.websocket_port = free_port()
    viewer = Viewer(
        config.viewer,
        log_filename=config.get_base_dir() / config.viewer.relative_log_filename,
        datapath=pipeline.datamanager.get_datapath(),
        pipeline=pipeline,
        train_lock=threading.Lock(),
    )
    saved_buffer = dict(writer.GLOBAL_BUFFER)
    config.logging.local_writer.enable = False  # as ns-viewer: no logging, but the render-speed buffer
    writer.setup_local_writer(config.logging, max_iter=config.max_num_iterations)
    viewer.init_scene(
        train_dataset=pipeline.datamanager.train_dataset, train_state="completed",
        eval_dataset=pipeline.datamanager.eval_dataset,
    )
    viewer.update_scene(step=step)
    log = RenderLog(model)
    try:
        yield types.SimpleNamespace(
            viewer=viewer, model=model, url=f"http://127.0.0.1:{config.viewer.websocket_port}", log=log
        )
    finally:
        for machine in list(viewer.render_statemachines.values()):
            machine.running = False
        viewer.viser_server.stop()
        writer.GLOBAL_BUFFER.clear()
        writer.GLOBAL_BUFFER.update(saved_buffer)
