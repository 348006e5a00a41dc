"""Benchmark outputs: results.json (validated against `RESULTS_SCHEMA`), results.md tables and PNG grids."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

__all__ = [
    "RESULTS_SCHEMA",
    "comparison_grid",
    "gains",
    "gains_figure",
    "gains_table",
    "markdown_tables",
    "summarize",
    "validate_results",
]

_METRICS = {"type": "object", "additionalProperties": {"type": "number"}}
_BINNED = {
    "type": "object",
    "required": ["all"],
    "properties": {k: _METRICS for k in ("all", "near", "mid", "far")},
    "additionalProperties": False,
}

RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "difix-ns benchmark results",
    "type": "object",
    "required": ["version", "config", "scenes", "runs", "fid"],
    "properties": {
        "version": {"const": 1},
        "config": {"type": "object", "description": "the benchmark command's options"},
        "scenes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "split"],
                "properties": {"name": {"type": "string"}, "split": {"type": "object"}},
            },
        },
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "scene",
                    "method",
                    "wall_seconds",
                    "fixer_seconds",
                    "seconds_per_iteration",
                    "peak_memory_mb",
                    "metrics",
                    "views",
                ],
                "properties": {
                    "scene": {"type": "string"},
                    "method": {"type": "string"},
                    "wall_seconds": {"type": "number", "description": "ns-train wall time, start-up included"},
                    "fixer_seconds": {
                        "type": "number",
                        "description": "time to make the run's fixer outside ns-train (the scene's shared self fixer)",
                    },
                    "seconds_per_iteration": {"type": ["number", "null"]},
                    "peak_memory_mb": {"type": "number", "description": "peak RSS of the ns-train process tree"},
                    "metrics": _BINNED,
                    "self_fixer": {
                        "type": "object",
                        "description": "the run's `self` fixer and the stages that kept it: `used` by the "
                        "progressive update (it beat doing nothing on its held-out-view validation pairs; else the run "
                        "trained with no pseudo views), `postprocess` (on all its validation pairs and on those of the "
                        "folds' own views; else post-processing left renders unchanged)",
                        "required": ["used"],
                        "properties": {
                            "used": {"type": "boolean"},
                            "postprocess": {"type": "boolean"},
                            "validation_psnr": {"type": ["number", "null"]},
                            "validation_psnr_unfixed": {"type": ["number", "null"]},
                            "novel_view_validation_psnr": {"type": ["number", "null"]},
                            "novel_view_validation_psnr_unfixed": {"type": ["number", "null"]},
                            "own_view_validation_psnr": {"type": ["number", "null"]},
                            "own_view_validation_psnr_unfixed": {"type": ["number", "null"]},
                        },
                    },
                    "views": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["file_path", "bin", "metrics"],
                            "properties": {
                                "file_path": {"type": "string"},
                                "bin": {"enum": ["near", "mid", "far"]},
                                "metrics": _METRICS,
                            },
                        },
                    },
                },
            },
        },
        "fid": {
            "type": "object",
            "required": ["available"],
            "properties": {"available": {"type": "boolean"}, "reason": {"type": "string"}},
        },
    },
}
"""JSON Schema of results.json: psnr/ssim (and lpips, fid where their weights exist) per run, per distance bin."""


def validate_results(results: dict) -> None:
    """Raise `jsonschema.ValidationError` if `results` does not follow `RESULTS_SCHEMA`."""
    import jsonschema

    jsonschema.validate(results, RESULTS_SCHEMA)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarize(views: List[dict]) -> Dict[str, Dict[str, float]]:
    """Mean metrics over all views and per distance bin (bins without views are left out)."""
    keys = sorted(set.intersection(*(set(v["metrics"]) for v in views))) if views else []
    groups = {"all": views, **{b: [v for v in views if v["bin"] == b] for b in ("near", "mid", "far")}}
    return {g: {k: _mean([v["metrics"][k] for v in vs]) for k in keys} for g, vs in groups.items() if vs}


def _cell(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if key in ("psnr", "mpsnr", "fid") else f"{value:.4f}"


def markdown_tables(results: dict, methods: Sequence[str]) -> str:
    """Means over scenes (per bin), then one table per scene."""
    runs = results["runs"]
    keys = [
        k for k in ("psnr", "ssim", "mpsnr", "mssim", "lpips", "fid") if any(k in r["metrics"]["all"] for r in runs)
    ]
    groups = [g for g in ("all", "near", "mid", "far") if any(g in r["metrics"] for r in runs)]
    header = ["method"] + [f"{k} {g}" for g in groups for k in keys] + ["train s", "fixer s", "s/iter", "peak MB"]

    def table(rows: List[Tuple[str, List[dict]]]) -> List[str]:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, method_runs in rows:
            cells = [method]
            for g in groups:
                for k in keys:
                    cells.append(
                        _cell(k, _mean([r["metrics"][g][k] for r in method_runs if k in r["metrics"].get(g, {})]))
                    )
            cells += [
                f"{_mean([r['wall_seconds'] for r in method_runs]):.0f}",
                f"{_mean([r['fixer_seconds'] for r in method_runs]):.0f}",
                _cell("s", _mean([r["seconds_per_iteration"] or float("nan") for r in method_runs])),
                f"{max(r['peak_memory_mb'] for r in method_runs):.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    scenes = [s["name"] for s in results["scenes"]]
    out = [f"## Mean over {len(scenes)} scene(s)", ""]
    out += table([(m, [r for r in runs if r["method"] == m]) for m in methods])
    for scene in scenes:
        out += ["", f"## {scene}", ""]
        out += table([(m, [r for r in runs if r["method"] == m and r["scene"] == scene]) for m in methods])
    return "\n".join(out) + "\n"


_BINS = ("all", "near", "mid", "far")


def gains(
    results: dict, pairs: Sequence[Tuple[str, str]], key: str
) -> Dict[Tuple[str, str], Dict[str, Dict[str, float]]]:
    """Metric `key` of each (method, baseline) pair, method minus baseline: {pair: {bin: {scene: gain}}}.

    Scenes where either run lacks the bin are left out of that bin.
    """
    by_run = {(r["scene"], r["method"]): r["metrics"] for r in results["runs"]}
    out: Dict[Tuple[str, str], Dict[str, Dict[str, float]]] = {}
    for method, baseline in pairs:
        per_bin: Dict[str, Dict[str, float]] = {}
        for group in _BINS:
            for scene in (s["name"] for s in results["scenes"]):
                ours, theirs = by_run.get((scene, method)), by_run.get((scene, baseline))
                if key not in (ours or {}).get(group, {}) or key not in (theirs or {}).get(group, {}):
                    continue
                per_bin.setdefault(group, {})[scene] = ours[group][key] - theirs[group][key]
        out[(method, baseline)] = per_bin
    return out


def _gain_keys(results: dict) -> List[str]:
    """psnr and ssim, plus the co-visibility-masked mpsnr and mssim when the runs have them."""
    present = {k for r in results["runs"] for k in r["metrics"].get("all", {})}
    return [k for k in ("psnr", "ssim", "mpsnr", "mssim") if k in present]


def gains_table(results: dict, pairs: Sequence[Tuple[str, str]]) -> str:
    """Markdown: PSNR and SSIM gain (and masked mPSNR, mSSIM where masks exist) of each method over its baseline
    per bin (mean over scenes), then the far-view PSNR gain per scene."""
    if not pairs:
        return ""
    keys = _gain_keys(results)
    table = {k: gains(results, pairs, k) for k in keys}
    psnr = table["psnr"]
    groups = [g for g in _BINS if any(g in psnr[p] for p in pairs)]
    header = ["method", "over"] + [f"Δ{k} {g}" for g in groups for k in keys] + ["Δpsnr far per scene"]
    lines = ["## Gains over the baseline (method minus baseline, mean over scenes)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in pairs:
        cells = list(pair)
        for g in groups:
            for k in keys:
                cells.append(_signed(_mean(list(table[k][pair].get(g, {}).values())), 2 if "psnr" in k else 4))
        far = psnr[pair].get("far", {})
        cells.append(", ".join(f"{scene} {_signed(v, 2)}" for scene, v in far.items()) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _signed(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:+.{digits}f}"


def gains_figure(path: Path, results: dict, pairs: Sequence[Tuple[str, str]]) -> None:
    """PNG: PSNR and SSIM (and masked mPSNR, mSSIM where masks exist) gain per distance bin for each (method,
    baseline) pair; bars are means, dots scenes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("near", "mid", "far") if any(g in r["metrics"] for r in results["runs"])]
    keys = _gain_keys(results)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(2.5 * len(keys) + 1.2 * len(pairs) * len(groups), 3.6), squeeze=False
    )
    width = 0.8 / max(len(pairs), 1)
    for ax, key in zip(axes[0], keys):
        table = gains(results, pairs, key)
        for i, pair in enumerate(pairs):
            xs = [j + (i - (len(pairs) - 1) / 2) * width for j in range(len(groups))]
            means = [_mean(list(table[pair].get(g, {}).values())) for g in groups]
            ax.bar(xs, means, width, label=f"{pair[0]} - {pair[1]}")
            for x, g in zip(xs, groups):
                scenes = list(table[pair].get(g, {}).values())
                ax.scatter([x] * len(scenes), scenes, color="black", s=8, zorder=3)
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        label = {"mpsnr": "masked PSNR", "mssim": "masked SSIM"}.get(key, key.upper())
        ax.set_ylabel(f"{label} gain" + (" (dB)" if "psnr" in key else ""))
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Gain over the baseline per distance bin (bars: mean over scenes, dots: scenes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_grid(
    path: Path, rows: List[str], columns: List[Tuple[str, Dict[str, Path]]], captions: Dict[Tuple[str, str], str]
) -> None:
    """PNG grid: one row per view name, one column per (label, view name -> image file); captions under panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), 2.5 * len(rows)), squeeze=False)
    for i, view in enumerate(rows):
        for j, (label, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(Image.open(images[view]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(captions.get((label, view), Path(view).name), fontsize=7)
            if i == 0:
                ax.set_title(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
