"""Rate-distortion of `difix-ns compress` on one synthetic scene (CPU): size, ratio to the float32 PLY, PSNR/SSIM on
the held-out views (against the photos and against the uncompressed scene's renders), compress/decompress time.

One difix-splatfacto run is trained with ns-train (subprocess), read and scored once, then compressed at budgets
of PLY size / ratio for each `--ratios` value, decompressed into run folders and evaluated through
`difix_ns.evaluation.evaluate_views` (nerfstudio's own metrics). Writes results.json, report.md and rd.png.

    .venv/bin/python benchmarks/compression_rd.py --iterations 300 --ratios 25 50 100 200
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _evaluate(config_path: Path, reference=None) -> dict:
    """Mean metrics of a run's held-out views; PSNR to `reference` renders (same view order) when given."""
    from difix_ns.evaluation import evaluate_views

    views = evaluate_views(config_path, description=f"Evaluating {config_path.parent.name}")
    out = {k: float(np.mean([v.metrics[k] for v in views])) for k in ("psnr", "ssim")}
    if reference is not None:
        out["psnr_vs_uncompressed"] = float(np.mean([_psnr(v.rendered, r.rendered) for v, r in zip(views, reference)]))
    return out, views


def _train(args, work: Path) -> Path:
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene
    from difix_ns.runner import budget_args, run_ns_train, splatfacto_schedule_args

    scene = make_synthetic_scene(SynthConfig(out=work / "scene", seed=args.seed, resolution=args.resolution))
    extra = [*budget_args(args.iterations), *splatfacto_schedule_args(args.iterations),
             "--pipeline.model.postprocess=False", "--pipeline.model.fixer.backend=identity"]  # fmt: skip
    return run_ns_train("difix-splatfacto", scene, work / "runs", "rd", extra).config_path


def _report(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["budgets"]
    base = results["uncompressed"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["bytes"] for r in rows], [r["psnr"] for r in rows], "o-", label="compressed")
    ax.axhline(base["psnr"], color="gray", linestyle="--", label=f"uncompressed ({base['ply_bytes']} B PLY)")
    ax.set_xscale("log")
    ax.set_xlabel("file size (bytes)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    lines = [
        "# Compression rate-distortion (synthetic scene, CPU)",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. Produced by benchmarks/compression_rd.py.",
        "",
        f"Uncompressed: {base['num_gaussians']} Gaussians, float32 PLY {base['ply_bytes']} bytes, "
        f"PSNR {base['psnr']:.2f} dB, SSIM {base['ssim']:.3f}. Reading + importance scoring: "
        f"{results['read_seconds']:.1f} s.",
        "",
        "| target ratio | budget (B) | file (B) | ratio | Gaussians | PSNR | PSNR loss | PSNR vs uncompressed render "
        "| SSIM | encode (s) | compress total (s) | decompress (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target_ratio']}x | {r['budget']} | {r['bytes']} | {r['ratio']:.1f}x | {r['num_gaussians']} | "
            f"{r['psnr']:.2f} | {base['psnr'] - r['psnr']:.2f} | {r['psnr_vs_uncompressed']:.2f} | {r['ssim']:.3f} | "
            f"{r['encode_seconds']:.2f} | {r['seconds']:.1f} | {r['decompress_seconds']:.1f} |"
        )
    lines += ["", "No restorer is applied here (compressed-only curve); see the issue note for what is left.", ""]
    (out / "report.md").write_text("\n".join(lines))


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression"))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratios", type=float, nargs="+", default=[25, 50, 100, 200])
    args = parser.parse_args()
    if len(args.ratios) < 1 or min(args.ratios) <= 1:
        raise ValueError(f"--ratios must be values > 1, got {args.ratios}")

    from difix_ns.compression.command import compress_scene, decompress_file, read_scene

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config_path = _train(args, work)
        base, base_views = _evaluate(config_path)
        scene = read_scene(config_path)
        n, degree = scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree)
        from difix_ns.compression.command import uncompressed_ply_bytes

        base.update(num_gaussians=n, ply_bytes=uncompressed_ply_bytes(n, degree))
        rows = []
        for ratio in sorted(args.ratios):
            budget = int(base["ply_bytes"] / ratio)
            summary = compress_scene(scene, work / f"{ratio:g}.dxs", budget_bytes=budget)
            start = time.perf_counter()
            decoded_config, _ = decompress_file(work / f"{ratio:g}.dxs", work / f"dec_{ratio:g}")
            decompress_seconds = time.perf_counter() - start
            metrics, _ = _evaluate(decoded_config, base_views)
            rows.append({"target_ratio": ratio, "budget": budget, **summary, **metrics,
                         "decompress_seconds": decompress_seconds})  # fmt: skip
    results = {
        "command": "python benchmarks/compression_rd.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch CPU",
        "iterations": args.iterations, "resolution": args.resolution, "seed": args.seed,
        "read_seconds": scene.seconds, "uncompressed": base, "budgets": rows,
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    _report(results, args.out)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
