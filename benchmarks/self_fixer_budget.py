"""What the `self` fixer's budget buys: `difix-ns benchmark` at several self-fixer budgets, side by side (not a test).

Each variant `FOLD_ITERS:SECONDS` is one benchmark (`--self-fixer-iters FOLD_ITERS --self-fixer-seconds SECONDS`)
of splatfacto, difix-splatfacto and difix-splatfacto+post into `--work/iFOLD_ITERS_sSECONDS`. The splatfacto runs of
the first variant are copied into the others, so every variant is scored against the same baseline run. Prints and
writes, per variant: the fixer's wall time and its ratio to the difix-splatfacto training it serves (issue 16's cost
goal: <= 0.5), the fixer's own validation (fixed vs unfixed PSNR on its held-out leave-out pairs; a fixer that loses
is replaced by the identity), and the gains of difix-splatfacto over splatfacto and of +post over difix-splatfacto.

    .venv/bin/python benchmarks/self_fixer_budget.py --seeds 0 --variants 200:25 500:90 500:240

Writes report.md, results.json and cost_gain.png into --out; the benchmark folders under --work resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean
from typing import Dict, List, Tuple

_METHODS = ("splatfacto", "difix-splatfacto", "difix-splatfacto+post")
_PAIRS = (("difix-splatfacto", "splatfacto"), ("difix-splatfacto+post", "difix-splatfacto"))
# (pair, metric, bin) columns of the report
_COLUMNS = (
    (_PAIRS[0], "psnr", "all"),
    (_PAIRS[0], "psnr", "near"),
    (_PAIRS[0], "psnr", "mid"),
    (_PAIRS[0], "mpsnr", "far"),
    (_PAIRS[0], "mssim", "far"),
    (_PAIRS[1], "psnr", "near"),
    (_PAIRS[1], "psnr", "mid"),
    (_PAIRS[1], "psnr", "far"),
    (_PAIRS[1], "mpsnr", "far"),
)


def _variant(text: str) -> Tuple[int, float]:
    iters, _, seconds = text.partition(":")
    if not seconds:
        raise argparse.ArgumentTypeError(f"a variant is FOLD_ITERS:SECONDS, e.g. 500:90, got {text!r}")
    return int(iters), float(seconds)


def _run(seeds: List[int], iters: int, variant: Tuple[int, float], folder: Path, baseline: Path) -> dict:
    from difix_ns.benchmark.command import BenchmarkConfig, run_benchmark

    for seed in seeds:  # share the baseline: the first variant's splatfacto runs, as they are
        run = Path("runs") / f"synth{seed}" / "splatfacto"
        source, target = baseline / run, folder / run
        if folder != baseline and (source / "result.json").is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve(), target_is_directory=True)  # a finished run is only read
    config = BenchmarkConfig(
        seeds=tuple(seeds), iters=iters, methods=_METHODS, out=folder, self_fixer_iters=variant[0],
        self_fixer_seconds=variant[1], self_fixer_steps=None,
    )
    run_benchmark(config)
    return json.loads((folder / "results.json").read_text())


def _row(results: dict, folder: Path) -> Dict[str, object]:
    from difix_ns.benchmark.report import gains
    from difix_ns.training.self_fixer import self_fixer_validation

    runs = {(r["scene"], r["method"]): r for r in results["runs"]}
    scenes = [s["name"] for s in results["scenes"]]
    fixer = mean(runs[(s, "difix-splatfacto")]["fixer_seconds"] for s in scenes)
    train = mean(runs[(s, "difix-splatfacto")]["wall_seconds"] for s in scenes)
    base = mean(runs[(s, "splatfacto")]["wall_seconds"] for s in scenes)
    validation = [self_fixer_validation(folder / "runs" / s / "self_fixer" / "train" / "fixer") for s in scenes]
    row: Dict[str, object] = {
        "fixer_seconds": fixer,
        "difix_train_seconds": train,
        "splatfacto_seconds": base,
        "fixer_over_training": fixer / train,
        "difix_total_over_splatfacto": (fixer + train) / base,
        "validation_gain": mean(v[0] - v[1] for v in validation if v is not None),
        "fixers_used": sum(v is None or v[0] > v[1] for v in validation),
        "gains": {},
    }
    for pair, key, group in _COLUMNS:
        per_scene = gains(results, [pair], key)[pair].get(group, {})  # empty: no view in that bin (beer's far)
        row["gains"][f"{pair[0]} over {pair[1]}: {key} {group}"] = mean(per_scene.values()) if per_scene else None
    return row


def _gain_headers() -> List[str]:
    """Report column names of `_COLUMNS`."""
    return [f"{p[0].replace('difix-splatfacto', 'difix')}: Δ{k} {g}" for p, k, g in _COLUMNS]


def _gain_cells(row: Dict[str, object]) -> List[str]:
    """Report cells of a `_row`'s gains (dB to 2 places, SSIM to 4)."""
    return ["-" if v is None else f"{v:+.4f}" if "ssim" in k else f"{v:+.2f}" for k, v in row["gains"].items()]


def _figure(rows: Dict[str, Dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ratios = [r["fixer_over_training"] for r in rows.values()]
    for label, key, group in (("difix: Δmpsnr far", "mpsnr", "far"), ("difix: Δpsnr all", "psnr", "all")):
        name = f"{_PAIRS[0][0]} over {_PAIRS[0][1]}: {key} {group}"
        ax.plot(ratios, [r["gains"][name] for r in rows.values()], "o-", label=label)
    for variant, row in rows.items():
        far = row["gains"][f"{_PAIRS[0][0]} over {_PAIRS[0][1]}: mpsnr far"]
        ax.annotate(variant, (row["fixer_over_training"], far))
    ax.axvline(0.5, color="gray", linestyle="--", label="cost goal (0.5x)")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("self fixer wall time / difix-splatfacto training wall time")
    ax.set_ylabel("gain over splatfacto (dB)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iters", type=int, default=1000, help="iterations of every method (benchmark --iters)")
    parser.add_argument("--variants", type=_variant, nargs="+", default=[(200, 25.0), (500, 90.0), (500, 240.0)])
    parser.add_argument("--work", type=Path, default=Path("outputs/self_fixer_budget"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/self_fixer_budget"))
    args = parser.parse_args()

    folders = {f"{i}:{s:g}": args.work / f"i{i}_s{s:g}" for i, s in args.variants}
    baseline = next(iter(folders.values()))
    rows = {}
    for (name, folder), variant in zip(folders.items(), args.variants):
        rows[name] = _row(_run(args.seeds, args.iters, variant, folder, baseline), folder)

    header = ["variant (fold iters:NAFNet s)", "fixer s", "fixer / training", "difix total / splatfacto",
              "fixer val. gain (dB)", "fixers used"] + _gain_headers()
    lines = [
        "# The self fixer's budget: cost against gain",
        "",
        f"`benchmarks/self_fixer_budget.py --seeds {' '.join(map(str, args.seeds))} --iters {args.iters} --variants "
        f"{' '.join(rows)}`: one `difix-ns benchmark` per variant (splatfacto, difix-splatfacto, +post; the same "
        "splatfacto runs for all), means over the scenes. `fixer / training`: the self fixer's wall time over the "
        "difix-splatfacto training it serves (issue 16's goal: <= 0.5). `fixer val. gain`: fixed minus unfixed PSNR on "
        "the fixer's held-out leave-out pairs (a fixer that loses there is replaced by the identity). Gains in dB "
        "(SSIM unitless); `difix` = difix-splatfacto over splatfacto, `difix+post` = +post over difix-splatfacto.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in rows.items():
        cells = [name, f"{row['fixer_seconds']:.0f}", f"{row['fixer_over_training']:.2f}",
                 f"{row['difix_total_over_splatfacto']:.2f}", f"{row['validation_gain']:+.2f}",
                 f"{row['fixers_used']}/{len(args.seeds)}"]
        cells += _gain_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    summary = {"seeds": args.seeds, "iters": args.iters, "variants": rows}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    _figure(rows, args.out / "cost_gain.png")
    print(report)
    print(f"written: {args.out / 'report.md'}, results.json, cost_gain.png")


if __name__ == "__main__":
    main()
