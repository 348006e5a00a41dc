"""What the progressive update's schedule buys: `difix-ns benchmark` with several sets of ns-train options for
difix-splatfacto, side by side on the same baseline and the same self fixer (not a test).

Each variant `NAME=OPTIONS` is one benchmark (`--fixer-method-args OPTIONS`) of splatfacto, difix-splatfacto and
difix-splatfacto+post into `--work/NAME`, with the settings of `--baseline` (a finished benchmark: the synthetic
default, or a real capture's `--data` benchmark). Its splatfacto runs and self fixers are linked in (and a real
capture's co-visibility masks copied: the benchmark rewrites their record), so only difix-splatfacto trains again
and every variant is scored against the same baseline with the same fixer. A variant with no options is the
baseline folder itself. Prints and writes, per variant, the gains of difix-splatfacto over splatfacto and of +post
over difix-splatfacto (means over the scenes).

    .venv/bin/python benchmarks/progressive_schedule.py --variants default= \\
        "step3=--pipeline.progressive.step-size 3.0"
    .venv/bin/python benchmarks/progressive_schedule.py --baseline benchmarks/results/real_fruit \\
        --work outputs/schedule_fruit --out outputs/schedule_fruit_report --variants default= "seed7=..."

Writes report.md, results.json and gains.png into --out; the benchmark folders under --work resume.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from self_fixer_budget import (  # noqa: E402  (one reading and one table of a benchmark's gains)
    _COLUMNS,
    _METHODS,
    _gain_cells,
    _gain_headers,
    _row,
)


def _variant(text: str) -> Tuple[str, str]:
    name, sep, options = text.partition("=")
    if not sep or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"a variant is NAME=OPTIONS (OPTIONS may be empty), got {text!r}")
    return name, options


def link_baseline(baseline: Path, folder: Path) -> dict:
    """Link `baseline`'s splatfacto runs and self fixers into the benchmark folder `folder` (and copy a real
    capture's co-visibility masks); returns the baseline's results.json."""
    results = json.loads((baseline / "results.json").read_text())
    for scene in (s["name"] for s in results["scenes"]):  # a finished run or fixer is only read: link it
        for shared in ("splatfacto", "self_fixer"):
            source, target = baseline / "runs" / scene / shared, folder / "runs" / scene / shared
            if not source.is_dir():
                raise ValueError(f"{source} is missing: --baseline must be a finished benchmark of the default methods")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve(), target_is_directory=True)
        covis, copy = baseline / "covis" / scene, folder / "covis" / scene
        if covis.is_dir() and not copy.exists():  # a copy: the benchmark rewrites covis.json in place
            shutil.copytree(covis.resolve(), copy, symlinks=True)
    return results


def baseline_config(results: dict, folder: Path, options: str):
    """The `BenchmarkConfig` of the baseline's `results` (its scenes, split, budget and fixer), writing into
    `folder` with `options` for the difix methods."""
    from difix_ns.benchmark.command import BenchmarkConfig

    made = results["config"]
    return BenchmarkConfig(
        data=None if made.get("data") is None else Path(made["data"]), downscale=made.get("downscale", 1),
        covis=made.get("covis", True), covis_iters=made.get("covis_iters", 500), seeds=tuple(made["seeds"]),
        resolution=made["resolution"], train_every=made.get("train_every"), train_views=made.get("train_views"),
        iters=made["iters"], methods=_METHODS, out=folder, fixer_method_args=options,
        self_fixer_seconds=made["self_fixer_seconds"], self_fixer_steps=made.get("self_fixer_steps"),
        self_fixer_iters=made.get("self_fixer_iters"),
    )  # fmt: skip


def _run(options: str, folder: Path, baseline: Path) -> dict:
    from difix_ns.benchmark.command import run_benchmark

    if folder == baseline:  # the default options: the finished benchmark as it is, not rewritten
        return json.loads((baseline / "results.json").read_text())
    run_benchmark(baseline_config(link_baseline(baseline, folder), folder, options))
    return json.loads((folder / "results.json").read_text())


def _figure(rows: Dict[str, Dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [c for c in _COLUMNS if "ssim" not in c[1]]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(rows)
    for i, (name, row) in enumerate(rows.items()):
        values = [row["gains"][f"{p[0]} over {p[1]}: {k} {g}"] for p, k, g in shown]
        values = [np.nan if v is None else v for v in values]  # no view in that bin
        ax.bar(np.arange(len(shown)) + i * width, values, width, label=name)
    labels = [f"{p[0].replace('difix-splatfacto', 'difix')}\nΔ{k} {g}" for p, k, g in shown]
    ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, labels, fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylabel("gain (dB), mean over scenes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _settings(results: dict) -> str:
    made = results["config"]
    scenes = ", ".join(s["name"] for s in results["scenes"])
    where = f"`{made['data']}` at 1/{made.get('downscale', 1)}" if made.get("data") else "synthetic"
    return f"{where} scenes {scenes}, {made['iters']} iterations"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=_variant, nargs="+", required=True)
    # the baseline's own: accepted so that the commands heading older reports still run
    parser.add_argument("--seeds", type=int, nargs="+", help="must be the baseline's (read from it)")
    parser.add_argument("--iters", type=int, help="must be the baseline's (read from it)")
    parser.add_argument("--baseline", type=Path, default=Path("benchmarks/results/sparse_synthetic"))
    parser.add_argument("--work", type=Path, default=Path("outputs/progressive_schedule"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/progressive_schedule"))
    args = parser.parse_args()

    baseline = json.loads((args.baseline / "results.json").read_text())
    for name, given in (("seeds", args.seeds), ("iters", args.iters)):
        if given is not None and given != baseline["config"][name]:
            parser.error(f"--{name} {given} differs from the baseline's {baseline['config'][name]}: leave it out")
    rows = {}
    for name, options in args.variants:
        folder = args.baseline if not options else args.work / name
        row = _row(_run(options, folder, args.baseline), folder)
        rows[name] = {"options": options, **row}

    header = ["variant", "difix-splatfacto options", "difix train s"] + _gain_headers()
    variants = " ".join(f'"{name}={row["options"]}"' for name, row in rows.items())
    lines = [
        "# The progressive update's schedule",
        "",
        f"`benchmarks/progressive_schedule.py --baseline {args.baseline} --variants {variants}`: one `difix-ns "
        "benchmark --fixer-method-args OPTIONS` per variant (splatfacto, difix-splatfacto, +post) with the "
        f"baseline's settings ({_settings(baseline)}), the baseline's splatfacto runs and self fixers shared by "
        "all; means over the scenes. Gains in dB (SSIM unitless); `difix` = difix-splatfacto over splatfacto, "
        "`difix+post` = +post over difix-splatfacto. Issue 16's goals: difix Δmpsnr far >= +1.0, Δpsnr all >= +0.3, "
        "Δmssim far >= 0; difix+post >= 0 in every bin, Δmpsnr far >= +0.5.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in rows.items():
        cells = [name, f"`{row['options']}`" if row["options"] else "(default)", f"{row['difix_train_seconds']:.0f}"]
        cells += _gain_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    summary = {"baseline": str(args.baseline), "baseline_config": baseline["config"], "variants": rows}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    _figure(rows, args.out / "gains.png")
    print(report)
    print(f"written: {args.out / 'report.md'}, results.json, gains.png")


if __name__ == "__main__":
    main()
