"""Which curated pairs make the `self` fixer help post-processing (not a test).

The benchmark's self fixer learns from leave-out pairs only: renders of training views that a reconstruction never
saw, i.e. heavy artifacts. Applied to every render (Difix3D+ post-processing) it may then over-correct renders that
are already good. This script takes a finished `difix-ns benchmark` run (fixer `self`) and, for each scene, trains a
second self fixer with the same time budget on the same leave-out pairs plus `underfit` pairs (the training views
rendered from early checkpoints of one reconstruction of all of them: milder artifacts). It then fixes the
benchmark's saved evaluation renders with both fixers and prints, side by side per distance bin, the PSNR of the raw
render, the render fixed by the benchmark's fixer and the render fixed by the new one.

    .venv/bin/python benchmarks/self_fixer_curation.py --benchmark benchmarks/results/sparse_synthetic

Writes `results.json`, `report.md` and `gains.png` into --out; reconstructions and fixers go to --work (resumable).
Only training views reach either fixer (curation reads the split's train_filenames); the evaluation renders and
ground truth are the PNGs the benchmark saved, so the leave-out column reproduces the benchmark's `+post` numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

_VARIANTS = ("raw", "leave-out", "leave-out+underfit")


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def _underfit_fixer(bench: Path, scene: str, work: Path, options: dict) -> Path:
    """The scene's self fixer trained on the benchmark's leave-out pairs (copied, so curation resumes them) plus
    underfit pairs, with the benchmark's settings otherwise."""
    from dataclasses import replace

    from difix_ns.benchmark.methods import self_fixer_config
    from difix_ns.training.self_fixer import train_self_fixer

    folder = work / scene
    if not (folder / "pairs").exists():
        shutil.copytree(bench / "runs" / scene / "self_fixer" / "pairs", folder / "pairs", symlinks=True)
    budget = self_fixer_config(
        options["iters"], options["self_fixer_seconds"], options.get("self_fixer_iters"),
        options.get("self_fixer_steps"),
    )  # fmt: skip
    config = replace(budget, strategies=("leave-out", "underfit"))
    return train_self_fixer(bench / "splits" / scene, folder, config)


def _budget(options: dict) -> str:
    steps = options.get("self_fixer_steps")
    return f"{steps} NAFNet steps" if steps is not None else f"{options['self_fixer_seconds']:g} s"


def _fix(fixer, image: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        fixed = fixer.fix(torch.from_numpy(image).permute(2, 0, 1)[None], None)
    # The benchmark scores renders saved as 8-bit PNGs; quantize the same way.
    return np.round(fixed[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255) / 255


def _gains_figure(rows: Dict[str, Dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = list(rows)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.38
    for k, variant in enumerate(_VARIANTS[1:]):
        gains = [rows[b][variant] - rows[b]["raw"] for b in bins]
        ax.bar(np.arange(len(bins)) + (k - 0.5) * width, gains, width, label=f"fixed by {variant} fixer")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(bins)), bins)
    ax.set_ylabel("PSNR gain over the raw render (dB)")
    ax.set_title("Post-processing with the self fixer, by curated pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", type=Path, default=Path("benchmarks/results/sparse_synthetic"),
                        help="a finished `difix-ns benchmark --fixer self` output folder (with its runs/)")
    parser.add_argument("--method", default="difix-splatfacto", help="whose saved renders are post-processed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/self_fixer_curation"))
    parser.add_argument("--work", type=Path, default=Path("outputs/self_fixer_curation"))
    args = parser.parse_args()

    from rich.console import Console

    from difix_ns.benchmark.report import summarize
    from difix_ns.fixers.config import FixerConfig
    from difix_ns.metrics import psnr

    console = Console()
    bench, work = args.benchmark.resolve(), args.work.resolve()
    results_path = bench / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: run `difix-ns benchmark --out {args.benchmark}` first")
    results = json.loads(results_path.read_text())
    options = results["config"]
    if options["fixer"] != "self" or options.get("fixer_model"):
        raise ValueError(f"{bench} was run with fixer {options['fixer']!r}; this compares `self` fixers")

    start = time.perf_counter()
    views: List[dict] = []
    steps: Dict[str, Dict[str, int]] = {}
    for scene in results["scenes"]:
        name = scene["name"]
        bins = {Path(e["file_path"]).name: e["bin"] for e in scene["split"]["eval"]}
        run = bench / "runs" / name / args.method
        if not (run / "result.json").is_file():
            raise FileNotFoundError(f"{run / 'result.json'} not found: {args.method} did not finish on {name}")
        console.rule(f"[bold]{name}: self fixer on leave-out + underfit pairs")
        fixers = {
            "leave-out": bench / "runs" / name / "self_fixer" / "train" / "fixer",
            "leave-out+underfit": _underfit_fixer(bench, name, work, options),
        }
        loaded = {k: FixerConfig(backend="nafnet", checkpoint=str(v), device="cpu").setup() for k, v in fixers.items()}
        # A time budget buys fewer steps on a loaded machine: keep what each fixer got.
        steps[name] = {k: json.loads((v.parent / "summary.json").read_text())["step"] for k, v in fixers.items()}
        for filename, label in sorted(bins.items()):
            truth, render = _load(run / "ground_truth" / filename), _load(run / "renders" / filename)
            scores = {"raw": psnr(render, truth)}
            scores.update({k: psnr(_fix(f, render), truth) for k, f in loaded.items()})
            views.append({"scene": name, "view": filename, "bin": label, "psnr": scores})

    rows = summarize([{"bin": v["bin"], "metrics": v["psnr"]} for v in views])
    counts = {g: sum(g in ("all", v["bin"]) for v in views) for g in rows}
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": str(args.benchmark),
        "method": args.method,
        "iters": options["iters"],
        "self_fixer_seconds": options["self_fixer_seconds"],
        "self_fixer_steps": options.get("self_fixer_steps"),
        "fixer_steps": steps,
        "psnr": rows,
        "views": views,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    _gains_figure(rows, args.out / "gains.png")
    lines = [
        "# Self fixer: which curated pairs help post-processing",
        "",
        f"Renders of `{args.method}` from `{args.benchmark}` ({len(results['scenes'])} scenes, {options['iters']} "
        f"iterations), fixed by the benchmark's self fixer (leave-out pairs) and by one trained with the same budget "
        f"({_budget(options)}) on leave-out + underfit pairs. Mean PSNR (dB); gains over the raw render.",
        "",
        "| views | n | raw | leave-out fixer | gain | leave-out+underfit fixer | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for g, r in rows.items():
        lines.append(
            f"| {g} | {counts[g]} | {r['raw']:.2f} | {r['leave-out']:.2f} | {r['leave-out'] - r['raw']:+.2f} "
            f"| {r['leave-out+underfit']:.2f} | {r['leave-out+underfit'] - r['raw']:+.2f} |"
        )
    lines += ["", "NAFNet steps within the time budget, per scene (leave-out / leave-out+underfit): " + ", ".join(
        f"{scene} {s['leave-out']} / {s['leave-out+underfit']}" for scene, s in steps.items()
    ) + "."]
    lines += ["", f"Command: `{shlex.join(sys.argv)}` ({payload['seconds']:.0f} s); figure: gains.png.", ""]
    (args.out / "report.md").write_text("\n".join(lines))
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
