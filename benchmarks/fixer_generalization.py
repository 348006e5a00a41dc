"""Fixer generalization benchmark (not a test): train a NAFNet fixer on pairs curated from synthetic scenes with
seeds A, then measure on scenes with seeds B, never seen in training, the PSNR of the held-out (evaluation) views
rendered by a reconstruction of B: degraded (the render) vs fixed (the render through the fixer). Goal: >= +2 dB.

    .venv/bin/python benchmarks/fixer_generalization.py --out benchmarks/results/fixer_generalization

Writes `results.json` (per view) and `report.md` into --out; intermediate files go to --work (resumable).
Everything runs through the product's code:
`difix_ns.data.curate` (ns-train reconstructions, leave-out + underfit pairs from training views only),
`difix_ns.training.train_fixer`, and `difix_ns.evaluation.evaluate_views` for the test renders.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def _scene(root: Path, seed: int, resolution: int) -> Path:
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    folder = root / f"scene_seed{seed}"
    if (folder / "transforms.json").is_file():
        return folder
    return make_synthetic_scene(SynthConfig(out=folder, seed=seed, resolution=resolution, overwrite=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fixer_generalization"))
    parser.add_argument("--work", type=Path, default=Path("outputs/fixer_generalization"),
                        help="scenes, pairs, reconstructions and the fixer (kept for resuming)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=100, help="ns-train iterations of every reconstruction")
    parser.add_argument("--folds", type=int, default=2, help="leave-out folds per training scene")
    parser.add_argument("--underfit", type=float, nargs="*", default=[0.5], help="underfit fractions (none: off)")
    parser.add_argument("--ns-train-args", default="--pipeline.model.stop-split-at 0",
                        help="extra ns-train options of every reconstruction (default: no densification, which "
                        "keeps the CPU rasterizer fast)")
    parser.add_argument("--fixer-steps", type=int, default=3000)
    parser.add_argument("--fixer-seconds", type=float, default=600.0)
    parser.add_argument("--fixer-width", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=48)
    parser.add_argument("--use-reference", action="store_true",
                        help="NAFNet with the reference input; test references = nearest training photo")
    args = parser.parse_args()

    from difix_ns.data.curate import CurateConfig, curate, train_nerfstudio
    from difix_ns.evaluation import evaluate_views
    from difix_ns.fixers.config import FixerConfig
    from difix_ns.metrics import psnr
    from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

    import torch

    out = args.out.resolve()
    work = args.work.resolve()
    timings = {}
    start = time.perf_counter()
    strategies = ("leave-out", "underfit") if args.underfit else ("leave-out",)
    manifests = []
    for seed in args.train_seeds:
        scene = _scene(work, seed, args.resolution)
        result = curate(
            CurateConfig(
                data=scene, out=work / f"pairs_seed{seed}", strategies=strategies, iterations=args.iterations,
                num_folds=args.folds, underfit_fractions=tuple(args.underfit or [0.5]), seed=seed,
                ns_train_args=args.ns_train_args,
            )
        )  # fmt: skip
        manifests.append(result.manifest)
    timings["curate_s"] = time.perf_counter() - start

    t = time.perf_counter()
    fixer_name = "fixer_ref" if args.use_reference else "fixer"
    fixer_dir = train_fixer(
        TrainFixerConfig(
            manifests=tuple(manifests), out=work / fixer_name, steps=args.fixer_steps, max_seconds=args.fixer_seconds,
            nafnet_width=args.fixer_width, crop_size=args.crop_size, batch_size=8, val_every=250, save_every=500,
            use_reference=args.use_reference,
        )
    )  # fmt: skip
    timings["train_fixer_s"] = time.perf_counter() - t
    summary = json.loads((work / fixer_name / "summary.json").read_text())
    fixer = FixerConfig(backend="nafnet", checkpoint=str(fixer_dir), device="cpu").setup()

    t = time.perf_counter()
    views = []
    for seed in args.test_seeds:
        scene = _scene(work, seed, args.resolution)
        eval_meta = json.loads((scene / "synth_meta.json").read_text())["eval"]
        labels = {Path(v["file_path"]).name: v["label"] for v in eval_meta}
        nearest = {Path(v["file_path"]).name: scene / v["nearest_train"] for v in eval_meta}
        run = work / f"test_run_seed{seed}"
        config_path = run / "run/difix-splatfacto/curate/config.yml"
        if not config_path.is_file():
            config_path = train_nerfstudio(
                scene,
                run,
                "difix-splatfacto",
                args.iterations,
                args.iterations,
                shlex.split(args.ns_train_args),
                seed=seed,
            )
        for view in evaluate_views(config_path, description=f"Rendering test scene {seed}"):
            rendered = torch.from_numpy(view.rendered).permute(2, 0, 1)[None].float()
            refs = None
            if args.use_reference:
                from PIL import Image

                photo = np.asarray(Image.open(nearest[view.filename]).convert("RGB"), dtype=np.float32) / 255
                refs = torch.from_numpy(photo).permute(2, 0, 1)[None, None]
            fixed = fixer.fix(rendered, refs)[0].permute(1, 2, 0).numpy()
            views.append(
                {
                    "seed": seed,
                    "view": view.filename,
                    "label": labels.get(view.filename, "?"),
                    "psnr_degraded": psnr(view.rendered, view.ground_truth),
                    "psnr_fixed": psnr(fixed, view.ground_truth),
                }
            )
    timings["test_s"] = time.perf_counter() - t

    def mean(key: str, label: str | None = None) -> float:
        vals = [v[key] for v in views if label is None or v["label"] == label]
        return float(np.mean(vals)) if vals else float("nan")

    rows = {g: {"degraded": mean("psnr_degraded", l), "fixed": mean("psnr_fixed", l)} for g, l in
            (("all", None), ("near", "near"), ("far", "far"))}  # fmt: skip
    for r in rows.values():
        r["gain"] = r["fixed"] - r["degraded"]
    results = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "fixer": {"steps": summary["step"], "seconds": summary["seconds"], "loss": summary["loss"],
                  "train_pairs": summary["train_pairs"], "validation": summary["validation"]},  # fmt: skip
        "psnr": rows,
        "views": views,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "machine": f"{platform.platform()}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Fixer generalization (NAFNet trained on seeds A, tested on unseen seeds B)",
        "",
        f"Train seeds {args.train_seeds}, test seeds {args.test_seeds}; {args.resolution}px synthetic scenes, "
        f"{args.iterations} ns-train iterations per reconstruction, curation {list(strategies)} "
        f"({summary['train_pairs']} training pairs); NAFNet width {args.fixer_width}, {summary['step']} steps "
        f"({summary['seconds']:.0f} s, loss {summary['loss']}).",
        "",
        "| held-out views | n | PSNR degraded | PSNR fixed | gain (dB) |",
        "|---|---|---|---|---|",
    ]
    for g, r in rows.items():
        n = sum(1 for v in views if g == "all" or v["label"] == g)
        lines.append(f"| {g} | {n} | {r['degraded']:.2f} | {r['fixed']:.2f} | {r['gain']:+.2f} |")
    lines += ["", f"Command: `{shlex.join(sys.argv)}`; timings {results['timings_s']}; {results['machine']}.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
