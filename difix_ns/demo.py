"""`difix-ns demo` (what `make demo` runs): baseline vs ours on the embedded synthetic scene.

Writes a synthetic scene, trains each method through the real `ns-train` command for the same small budget,
evaluates every held-out view through nerfstudio's own loading and metrics, and writes, all from that run:
`report.md` (metrics table, all views and views far from every training camera), `results.json` (per view)
and `compare.png` (ground truth | baseline | ours on the far views).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

__all__ = ["DemoConfig", "DemoRun", "run_demo"]

_ITERATION_TIME = re.compile(r"Trainer\.train_iteration:\s*([0-9.]+)")


@dataclass(frozen=True)
class DemoRun:
    """One trained method of the demo."""

    label: str
    """Name in the report."""
    method: str
    """Registered `ns-train` method."""
    extra_args: Tuple[str, ...] = ()
    """Extra `ns-train` options of this run (on top of the shared budget options)."""


def _default_runs() -> Tuple[DemoRun, ...]:
    # The baseline is splatfacto's algorithm on our device-independent path: difix-splatfacto with no fixer stage.
    # (nerfstudio's own `splatfacto` needs CUDA and network access.)
    return (
        DemoRun(label="splatfacto (baseline)", method="difix-splatfacto"),
        DemoRun(label="difix-splatfacto (ours)", method="difix-splatfacto"),
    )


@dataclass(frozen=True)
class DemoConfig:
    """Train baseline and ours on the synthetic scene and write a report and a comparison figure."""

    out: Path = Path("outputs/demo")
    """Folder for the scene, the runs, report.md, results.json and compare.png."""
    seed: int = 0
    """Seed of the synthetic scene."""
    resolution: int = 96
    """Image size of the synthetic scene (square)."""
    iterations: int = 400
    """Training iterations of every method (the same budget for all)."""
    runs: Tuple[DemoRun, ...] = field(default_factory=_default_runs)
    """Methods to compare; the first is the baseline, the last is 'ours'."""
    max_figure_views: int = 4
    """At most this many far views in compare.png."""

    def main(self) -> None:
        run_demo(self)


def _check(config: DemoConfig) -> None:
    if config.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {config.iterations}")
    if len(config.runs) < 2:
        raise ValueError(f"runs needs a baseline and at least one other method, got {len(config.runs)}")


def _budget_args(config: DemoConfig) -> List[str]:
    """Options that fit splatfacto's schedule (tuned for 30k steps) to the demo's budget; the same for all runs."""
    n = config.iterations
    return [
        f"--max-num-iterations={n}",
        f"--steps-per-save={n}",
        f"--steps-per-eval-image={n + 1}",
        f"--steps-per-eval-all-images={n + 1}",
        "--vis=tensorboard",
        "--timestamp=demo",
        # Small images: no coarse-to-fine stage; densify during the middle of the budget.
        "--pipeline.model.num-downscales=0",
        f"--pipeline.model.warmup-length={n // 4}",
        f"--pipeline.model.refine-every={max(n // 10, 10)}",
        f"--pipeline.model.stop-split-at={int(n * 0.75)}",
    ]


def _train(run: DemoRun, index: int, scene: Path, runs_dir: Path, config: DemoConfig) -> Tuple[Path, float, float]:
    """Train one method with `ns-train` (its output shown live).

    Returns its config.yml, the wall time in seconds, and nerfstudio's own mean time per training iteration (the
    `Trainer.train_iteration` line of its profiler summary; NaN if absent).
    """
    experiment = f"run{index}"
    command = [
        str(Path(sys.executable).with_name("ns-train")),
        run.method,
        f"--data={scene}",
        f"--output-dir={runs_dir}",
        f"--experiment-name={experiment}",
        *_budget_args(config),
        *run.extra_args,
    ]
    # Passive OpenMP waiting: on a loaded 2-core machine, spinning threads slow PyTorch's CPU ops several-fold.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    start = time.perf_counter()
    seconds_per_iteration = float("nan")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            match = _ITERATION_TIME.search(line)
            if match:
                seconds_per_iteration = float(match.group(1))
    if process.returncode != 0:
        raise RuntimeError(f"ns-train {run.method} failed (exit {process.returncode}); its output is above")
    seconds = time.perf_counter() - start
    return runs_dir / experiment / run.method / "demo" / "config.yml", seconds, seconds_per_iteration


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _summaries(views: List[dict], far: set) -> Dict[str, Dict[str, float]]:
    keys = [k for k in ("psnr", "ssim", "lpips") if all(k in v["metrics"] for v in views)]
    groups = {"all": views, "far": [v for v in views if v["filename"] in far]}
    return {g: {k: _mean([v["metrics"][k] for v in vs]) for k in keys} for g, vs in groups.items()}


def _report(config: DemoConfig, scene: Path, results: List[dict], far_count: int, wall: float) -> str:
    metric_keys = list(results[0]["summary"]["all"].keys())
    header = ["method"] + [f"{k} ({g})" for g in ("all", "far") for k in metric_keys] + ["ns-train wall s", "s/iter"]
    lines = [
        "# difix-ns demo",
        "",
        f"Synthetic scene seed {config.seed}, {config.resolution}x{config.resolution} px, "
        f"{config.iterations} training iterations per method. Evaluation: {len(results[0]['views'])} held-out views, "
        f"{far_count} of them far from every training view ('far').",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in results:
        cells = [r["label"]]
        for group in ("all", "far"):
            cells += [f"{r['summary'][group][k]:.4f}" if k != "psnr" else f"{r['summary'][group][k]:.2f}" for k in metric_keys]
        cells += [f"{r['train_seconds']:.0f}", f"{r['seconds_per_iteration']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Produced by `difix-ns demo --out {config.out}` in {wall:.0f} s ({sys.platform}); "
        f"per-view numbers in results.json, figure in compare.png.",
        "LPIPS is listed only when its AlexNet weights are available locally. 'ns-train wall s' includes start-up "
        "and checkpointing; 's/iter' is nerfstudio's mean `Trainer.train_iteration` time.",
        "Runs: " + "; ".join(f"{r['label']} = `ns-train {r['method']}` ({r['config']})" for r in results),
        "",
    ]
    return "\n".join(lines)


def _figure(path: Path, results: List[dict], far_names: List[str], max_views: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = far_names[:max_views]
    columns = ["ground truth"] + [r["label"] for r in results]
    fig, axes = plt.subplots(len(names), len(columns), figsize=(2.6 * len(columns), 2.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        per_run = [next(v for v in r["_views"] if v.filename == name) for r in results]
        panels = [(per_run[0].ground_truth, name)] + [
            (v.rendered, f"PSNR {v.metrics['psnr']:.2f}") for v in per_run
        ]
        for col, (image, caption) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=8)
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(config: DemoConfig) -> Path:
    """Run the demo; returns the path of report.md."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from difix_ns.data.synth import SynthConfig, make_synthetic_scene
    from difix_ns.evaluation import evaluate_views

    _check(config)
    start = time.perf_counter()
    out = Path(config.out)
    scene = make_synthetic_scene(SynthConfig(out=out / "scene", seed=config.seed, resolution=config.resolution, overwrite=True))
    meta = json.loads((scene / "synth_meta.json").read_text())
    far = [Path(v["file_path"]).name for v in meta["eval"] if v["label"] == "far"]
    runs_dir = out / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)  # a re-run trains afresh; nothing else of the user's lives there

    results = []
    for index, run in enumerate(config.runs):
        CONSOLE.rule(f"[bold]{run.label}: ns-train {run.method}, {config.iterations} iterations")
        config_path, seconds, seconds_per_iteration = _train(run, index, scene, runs_dir, config)
        views = evaluate_views(config_path, description=f"Evaluating {run.label}")
        serial = [{"filename": v.filename, "metrics": v.metrics} for v in views]
        results.append(
            {
                "label": run.label,
                "method": run.method,
                "config": str(config_path),
                "train_seconds": seconds,
                "seconds_per_iteration": seconds_per_iteration,
                "summary": _summaries(serial, set(far)),
                "views": serial,
                "_views": views,
            }
        )

    wall = time.perf_counter() - start
    (out / "report.md").write_text(_report(config, scene, results, len(far), wall))
    (out / "results.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "_views"} for r in results], indent=2))
    _figure(out / "compare.png", [results[0], results[-1]], far, config.max_figure_views)
    CONSOLE.print((out / "report.md").read_text())
    CONSOLE.print(f"[bold green]Demo done in {wall:.0f} s.[/bold green] Report: {out / 'report.md'}  Figure: {out / 'compare.png'}")
    return out / "report.md"
