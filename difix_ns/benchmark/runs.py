"""Run `ns-train` as a user would (a subprocess, output shown live) and measure it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["TrainResult", "run_ns_train"]

_ITERATION_TIME = re.compile(r"Trainer\.train_iteration:\s*([0-9.]+)")


@dataclass
class TrainResult:
    """What one `ns-train` run produced and cost."""

    config_path: Path
    """The run's config.yml (for ns-eval, ns-render, evaluation)."""
    wall_seconds: float
    """Wall time of the whole command, start-up and checkpointing included."""
    seconds_per_iteration: float
    """nerfstudio's own mean `Trainer.train_iteration` time (NaN if it did not print it)."""
    peak_memory_mb: float
    """Peak resident memory of the process tree, sampled every 0.2 s."""


def _sample_peak_rss(pid: int, peak: list, done: threading.Event) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
        while not done.wait(0.2):
            processes = [root] + root.children(recursive=True)
            rss = 0
            for process in processes:
                try:
                    rss += process.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], rss)
    except psutil.Error:
        pass


def run_ns_train(
    method: str, data: Path, output_dir: Path, experiment: str, args: Sequence[str] = (), timestamp: str = "run"
) -> TrainResult:
    """`ns-train METHOD --data DATA ... ARGS`; raises RuntimeError (its output is above) if it fails."""
    command = [
        str(Path(sys.executable).with_name("ns-train")),
        method,
        f"--data={data}",
        f"--output-dir={output_dir}",
        f"--experiment-name={experiment}",
        f"--timestamp={timestamp}",
        *args,
    ]
    # Passive OpenMP waiting: on a loaded 2-core machine, spinning threads slow PyTorch's CPU ops several-fold.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    seconds_per_iteration, peak, done = float("nan"), [0], threading.Event()
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        sampler = threading.Thread(target=_sample_peak_rss, args=(process.pid, peak, done), daemon=True)
        sampler.start()
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            match = _ITERATION_TIME.search(line)
            if match:
                seconds_per_iteration = float(match.group(1))
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"ns-train {method} failed (exit {process.returncode}); its output is above")
    return TrainResult(
        config_path=Path(output_dir) / experiment / method / timestamp / "config.yml",
        wall_seconds=time.perf_counter() - start,
        seconds_per_iteration=seconds_per_iteration,
        peak_memory_mb=peak[0] / 2**20,
    )
