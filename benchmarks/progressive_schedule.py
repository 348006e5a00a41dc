"""What the progressive update's schedule buys: `difix-ns benchmark` with several sets of ns-train options for
difix-splatfacto, side by side on the same baseline and the same self fixer (not a test).

Each variant `NAME=OPTIONS` is one benchmark (`--fixer-method-args OPTIONS`) of splatfacto, difix-splatfacto and
difix-splatfacto+post into `--work/NAME`, with the settings of `--baseline` (a finished benchmark: the synthetic
default, or a real capture's `--data` benchmark). Its splatfacto runs and self fixers are linked in (and a real
capture's co-visibility masks copied: the benchmark rewrites their record), so only difix-splatfacto trains again
and every variant is scored against the same baseline with the same fixer. A variant with no options is the
baseline folder itself. With `--sampling-seeds`, every variant also runs with each of those training-view sampling
seeds, against a splatfacto trained with the same seed (once per seed, `--work`/splatfacto_seedS). Prints and
writes, per variant, the gains of difix-splatfacto over splatfacto and of +post over difix-splatfacto (means over
the scenes).

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
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Dict, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from difix_ns.benchmark.command import SAMPLING_SEED_OPTION as _SEED_OPTION  # noqa: E402

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


def _link(source: Path, target: Path) -> None:
    """`target` -> `source` (a finished run or fixer is only read); an older link elsewhere is replaced."""
    if target.is_symlink() and target.resolve() != source.resolve():
        target.unlink()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve(), target_is_directory=True)


def _copy_covisibility(baseline: Path, folder: Path, scenes) -> None:
    for scene in scenes:  # a copy: the benchmark rewrites covis.json in place
        covis, copy = baseline / "covis" / scene, folder / "covis" / scene
        if covis.is_dir() and not copy.exists():
            shutil.copytree(covis.resolve(), copy, symlinks=True)


def link_baseline(baseline: Path, folder: Path, splatfacto_runs: Optional[Path] = None) -> dict:
    """Link `baseline`'s self fixers and splatfacto runs (or those of the benchmark folder `splatfacto_runs`) into
    the benchmark folder `folder`, and copy a real capture's co-visibility masks; returns the baseline's
    results.json."""
    results = json.loads((baseline / "results.json").read_text())
    scenes = [s["name"] for s in results["scenes"]]
    for scene in scenes:
        for shared, source_folder in (("splatfacto", splatfacto_runs or baseline), ("self_fixer", baseline)):
            source = source_folder / "runs" / scene / shared
            if not source.is_dir():
                raise ValueError(f"{source} is missing: --baseline must be a finished benchmark of the default methods")
            _link(source, folder / "runs" / scene / shared)
    _copy_covisibility(baseline, folder, scenes)
    return results


def seed_splatfacto(baseline: Path, work: Path, seed: int) -> Path:
    """splatfacto with training-view sampling seed `seed`, with the baseline's scenes and settings, trained once
    into `work`/splatfacto_seedS (shared by every variant of that seed, so each gain compares one seed)."""
    from difix_ns.benchmark.command import run_benchmark

    results = json.loads((baseline / "results.json").read_text())
    folder = work / f"splatfacto_seed{seed}"
    _copy_covisibility(baseline, folder, [s["name"] for s in results["scenes"]])
    run_benchmark(replace(baseline_config(results, folder, ""), methods=("splatfacto",), sampling_seed=seed))
    return folder


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


def _run(options: str, folder: Path, baseline: Path, seed: Optional[int], splatfacto_runs: Optional[Path]) -> dict:
    from difix_ns.benchmark.command import run_benchmark

    if folder == baseline:  # the default options: the finished benchmark as it is, not rewritten
        return json.loads((baseline / "results.json").read_text())
    config = baseline_config(link_baseline(baseline, folder, splatfacto_runs), folder, options)
    run_benchmark(replace(config, sampling_seed=seed))
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
        keys = [f"{p[0]} over {p[1]}: {k} {g}" for p, k, g in shown]
        values = np.array([np.nan if row["gains"][k] is None else row["gains"][k] for k in keys])  # None: no view
        runs = [[np.nan if r["gains"][k] is None else r["gains"][k] for k in keys] for r in row["per_seed"].values()]
        spread = None
        if len(runs) > 1:  # error bars: the lowest and highest sampling seed
            spread = np.stack([values - np.nanmin(runs, axis=0), np.nanmax(runs, axis=0) - values])
        ax.bar(np.arange(len(shown)) + i * width, values, width, yerr=spread, capsize=2, label=name)
    labels = [f"{p[0].replace('difix-splatfacto', 'difix')}\nΔ{k} {g}" for p, k, g in shown]
    ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, labels, fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylabel("gain (dB), mean over scenes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _seed_label(seed: Optional[int]) -> str:
    from difix_ns.data.datamanagers import DifixFullImageDatamanagerConfig

    return f"{DifixFullImageDatamanagerConfig().train_cameras_sampling_seed} (default)" if seed is None else str(seed)


def _mean_row(per_seed: Dict[str, Dict[str, object]]) -> Dict[str, object]:
    """Means over the sampling seeds' rows (seconds and gains; a gain missing in every run stays None), with the
    rows themselves under `per_seed`."""
    runs = list(per_seed.values())
    row: Dict[str, object] = {k: mean(r[k] for r in runs) for k in ("difix_train_seconds", "fixer_seconds")}
    row["gains"] = {}
    for key in runs[0]["gains"]:
        values = [r["gains"][key] for r in runs if r["gains"][key] is not None]
        row["gains"][key] = mean(values) if values else None
    row["per_seed"] = per_seed
    return row


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
    parser.add_argument(
        "--sampling-seeds", type=int, nargs="*", default=[],
        help=f"also run every variant with each of these {_SEED_OPTION} values (rows: means over the seeds)",
    )  # fmt: skip
    parser.add_argument("--baseline", type=Path, default=Path("benchmarks/results/sparse_synthetic"))
    parser.add_argument("--work", type=Path, default=Path("outputs/progressive_schedule"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/progressive_schedule"))
    args = parser.parse_args()

    baseline = json.loads((args.baseline / "results.json").read_text())
    for name, given in (("seeds", args.seeds), ("iters", args.iters)):
        if given is not None and given != baseline["config"][name]:
            parser.error(f"--{name} {given} differs from the baseline's {baseline['config'][name]}: leave it out")
    splatfacto_runs = {seed: seed_splatfacto(args.baseline, args.work, seed) for seed in args.sampling_seeds}
    rows = {}
    for name, options in args.variants:
        per_seed = {}
        for seed in [None, *args.sampling_seeds]:  # None: the data manager's default seed, the baseline's
            if seed is None:
                folder = args.baseline if not options else args.work / name
            else:
                folder = args.work / f"{name}_seed{seed}"
            run = _run(options, folder, args.baseline, seed, splatfacto_runs.get(seed))
            per_seed[_seed_label(seed)] = _row(run, folder)
        rows[name] = {"options": options, **_mean_row(per_seed)}

    header = ["variant", "difix-splatfacto options", "difix train s"] + _gain_headers()
    variants = " ".join(f'"{name}={row["options"]}"' for name, row in rows.items())
    seeds = f" --sampling-seeds {' '.join(map(str, args.sampling_seeds))}" if args.sampling_seeds else ""
    lines = [
        "# The progressive update's schedule",
        "",
        f"`benchmarks/progressive_schedule.py --baseline {args.baseline} --variants {variants}{seeds}`: one `difix-ns "
        "benchmark --fixer-method-args OPTIONS` per variant (splatfacto, difix-splatfacto, +post) with the "
        f"baseline's settings ({_settings(baseline)}), the baseline's self fixers and splatfacto runs shared by "
        "all; means over the scenes. Gains in dB (SSIM unitless); `difix` = difix-splatfacto over splatfacto, "
        "`difix+post` = +post over difix-splatfacto. Issue 16's goals: difix Δmpsnr far >= +1.0, Δpsnr all >= +0.3, "
        "Δmssim far >= 0; difix+post >= 0 in every bin, Δmpsnr far >= +0.5."
        + (
            f" Each variant also ran with `{_SEED_OPTION}` {', '.join(map(str, args.sampling_seeds))} (the order in "
            "which training views are drawn, nothing else), against splatfacto trained with the same seed "
            "(`--work`/splatfacto_seedS): the first table gives the means over the seeds, the second each run."
            if args.sampling_seeds
            else ""
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in rows.items():
        cells = [name, f"`{row['options']}`" if row["options"] else "(default)", f"{row['difix_train_seconds']:.0f}"]
        cells += _gain_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    if args.sampling_seeds:
        lines += ["", "| variant | sampling seed | " + " | ".join(_gain_headers()) + " |"]
        lines.append("|" + "---|" * (2 + len(_COLUMNS)))
        for name, row in rows.items():
            for seed, run in row["per_seed"].items():
                lines.append(f"| {name} | {seed} | " + " | ".join(_gain_cells(run)) + " |")
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
