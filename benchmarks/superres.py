"""Super-resolution benchmark of sr3d-splatfacto on one synthetic scene (HR ground truth known), scored at HR.

Four recipes, each one `ns-train sr3d-splatfacto` run on the same HR dataset (LR views = HR / factor, made by the
method's data manager), the same total number of 3DGS steps, then `ns-eval` on the held-out views at HR:
  (i)   lr-only:   splatfacto trained on the LR views at LR cameras, rendered at HR (the run stops before round 1);
  (ii)  bicubic:   splatfacto on the bicubic-upsampled LR views (one LR step, then bicubic targets, no LR term);
  (iii) per-frame: splatfacto on per-frame SR of the LR views by the `self` back-end (no render conditioning, no
                   LR term, one round);
  (iv)  sr3d:      sr3d-splatfacto: LR stage, then K rounds of `self` SR conditioned on the render + the LR term.
The `self` back-end is trained once per run that uses it, within its time budget.

    .venv/bin/python benchmarks/superres.py --out benchmarks/results/superres

writes results.json (per recipe: PSNR, SSIM at HR, wall seconds, the exact ns-train options) and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from difix_ns.data.synth import SynthConfig, make_synthetic_scene
from difix_ns.runner import budget_args, run_ns_train, splatfacto_schedule_args


def recipes(iterations: int, lr_iterations: int, rounds: int, self_seconds: float) -> Dict[str, List[str]]:
    """ns-train options of each recipe (all with `iterations` 3DGS steps in total)."""
    per_round = (iterations - lr_iterations) // rounds
    sr = "--pipeline.superres."
    self_args = [f"{sr}backend=self", f"{sr}self-sr.max-seconds={self_seconds}", f"{sr}self-sr.steps=100000"]
    return {
        "i_lr_only": [f"{sr}lr-iterations={iterations}", f"{sr}rounds=1", f"{sr}iterations-per-round=1"],
        "ii_bicubic": [
            f"{sr}lr-iterations=1", f"{sr}rounds=1", f"{sr}iterations-per-round={iterations - 1}",
            f"{sr}backend=bicubic", f"{sr}color-fix=False", f"{sr}lambda-lr=0",
        ],
        "iii_per_frame": [
            f"{sr}lr-iterations=1", f"{sr}rounds=1", f"{sr}iterations-per-round={iterations - 1}",
            f"{sr}condition-on-render=False", f"{sr}lambda-lr=0", *self_args,
        ],
        "iv_sr3d": [
            f"{sr}lr-iterations={lr_iterations}", f"{sr}rounds={rounds}", f"{sr}iterations-per-round={per_round}",
            *self_args,
        ],
    }  # fmt: skip


def ns_eval(config_path: Path, output: Path) -> Dict[str, float]:
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    ns_eval_bin = str(Path(sys.executable).with_name("ns-eval"))
    command = [ns_eval_bin, f"--load-config={config_path}", f"--output-path={output}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"ns-eval failed on {config_path}:\n{result.stderr[-3000:]}")
    return json.loads(output.read_text())["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/superres"))
    parser.add_argument("--work", type=Path, default=Path("outputs/superres_benchmark"))
    parser.add_argument("--resolution", type=int, default=96, help="HR side of the synthetic scene (px)")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=600, help="3DGS steps of every recipe")
    parser.add_argument("--lr-iterations", type=int, default=300, help="LR stage of sr3d (iv)")
    parser.add_argument("--rounds", type=int, default=3, help="SR rounds of sr3d (iv)")
    parser.add_argument("--self-seconds", type=float, default=60.0, help="time budget of the self back-end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = args.work.resolve()
    scene = work / "scene"
    if not (scene / "transforms.json").is_file():
        make_synthetic_scene(SynthConfig(out=scene, seed=args.seed, resolution=args.resolution, overwrite=True))
    common = [
        f"--pipeline.superres.factor={args.factor}", *budget_args(args.iterations),
        *splatfacto_schedule_args(args.iterations),
    ]  # fmt: skip
    results = {}
    for name, options in recipes(args.iterations, args.lr_iterations, args.rounds, args.self_seconds).items():
        print(f"superres benchmark: {name}", flush=True)
        run = run_ns_train("sr3d-splatfacto", scene, work / "runs", name, [*common, *options], echo=False)
        metrics = ns_eval(run.config_path, work / f"eval_{name}.json")
        results[name] = {
            "psnr": metrics["psnr"], "ssim": metrics["ssim"], "wall_seconds": round(run.wall_seconds, 1),
            "ns_train_options": [*common, *options],
        }  # fmt: skip
        print(f"  PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, {run.wall_seconds:.0f} s", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    lines = [
        "# Super-resolution benchmark (benchmarks/superres.py)", "",
        f"Synthetic scene, seed {args.seed}, HR {args.resolution} px, factor {args.factor} "
        f"(LR {args.resolution // args.factor} px), {args.iterations} 3DGS steps per recipe; "
        "held-out views scored at HR by ns-eval. The self back-end trains within its time budget in each run "
        "that uses it.", "",
        "| recipe | PSNR (dB) | SSIM | wall (s) |", "|---|---|---|---|",
    ]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['wall_seconds']:.0f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
