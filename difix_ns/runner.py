"""The one way this project launches `ns-train`: a subprocess, as a user would run it, measured; plus the budget
options and the splatfacto schedule every short run shares.

A subprocess (not nerfstudio's `main` in this process) because nerfstudio keeps its writers and profiler in module
globals: a run started from inside another (the self fixer's reconstructions inside `ns-train difix-*`) would
overwrite them.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["TrainResult", "budget_args", "run_ns_train", "splatfacto_schedule", "splatfacto_schedule_args"]

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


def splatfacto_schedule(iterations: int) -> Dict[str, int]:
    """Splatfacto's densification schedule (tuned for 30k steps) fitted to `iterations`, as model config fields:
    no coarse-to-fine stage (small images), densification from a quarter to three quarters of the budget."""
    n = iterations
    return {
        "num_downscales": 0,
        "warmup_length": max(n // 4, 1),
        "refine_every": max(n // 10, 10),
        "stop_split_at": int(n * 0.75),
    }


def splatfacto_schedule_args(iterations: int) -> List[str]:
    """`splatfacto_schedule` as ns-train options."""
    return [f"--pipeline.model.{k.replace('_', '-')}={v}" for k, v in splatfacto_schedule(iterations).items()]


def budget_args(iterations: int, steps_per_save: Optional[int] = None, keep_checkpoints: bool = False) -> List[str]:
    """ns-train options of a short run: `iterations` steps, a checkpoint every `steps_per_save` (default: at the
    end; all kept with `keep_checkpoints`), no evaluation during training, tensorboard instead of the viewer."""
    never = iterations + 1
    args = [
        f"--max-num-iterations={iterations}",
        f"--steps-per-save={steps_per_save or iterations}",
        f"--steps-per-eval-image={never}",
        f"--steps-per-eval-batch={never}",
        f"--steps-per-eval-all-images={never}",
        "--vis=tensorboard",
    ]
    if keep_checkpoints:
        args.append("--save-only-latest-checkpoint=False")
    return args


def run_ns_train(
    method: str,
    data: Path,
    output_dir: Path,
    experiment: str,
    args: Sequence[str] = (),
    timestamp: str = "run",
    echo: bool = True,
) -> TrainResult:
    """`ns-train METHOD --data DATA ... ARGS`; raises RuntimeError if it fails (with its last lines when `echo`
    is off; otherwise its output is above)."""
    command = [
        str(Path(sys.executable).with_name("ns-train")),
        method,
        f"--data={Path(data).resolve()}",
        f"--output-dir={Path(output_dir).resolve()}",
        f"--experiment-name={experiment}",
        f"--timestamp={timestamp}",
        *args,
    ]
    # Passive OpenMP waiting: on a loaded 2-core machine, spinning threads slow PyTorch's CPU ops several-fold.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    seconds_per_iteration, peak, done, tail = float("nan"), [0], threading.Event(), collections.deque(maxlen=30)
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        sampler = threading.Thread(target=_sample_peak_rss, args=(process.pid, peak, done), daemon=True)
        sampler.start()
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            if echo:
                sys.stdout.write(line)
            match = _ITERATION_TIME.search(line)
            if match:
                seconds_per_iteration = float(match.group(1))
    done.set()
    sampler.join()
    if process.returncode != 0:
        where = "its output is above" if echo else "its last lines:\n" + "".join(tail)
        raise RuntimeError(f"ns-train {method} on {data} failed (exit {process.returncode}); {where}")
    return TrainResult(
        config_path=Path(output_dir).resolve() / experiment / method / timestamp / "config.yml",
        wall_seconds=time.perf_counter() - start,
        seconds_per_iteration=seconds_per_iteration,
        peak_memory_mb=peak[0] / 2**20,
    )
