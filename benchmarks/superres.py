"""Super-resolution benchmark of sr3d-splatfacto on synthetic scenes and the real captures, scored at HR.

Per scene, every 8th view is held out (synthetic: of a dense set of training views) and four recipes are trained,
each one `ns-train sr3d-splatfacto` run on the same HR dataset (LR views = HR / factor, made by the method's data
manager) with the same total number of 3DGS steps:
  (i)   lr-only:   splatfacto trained on the LR views at LR cameras, rendered at HR (the run stops before round 1);
  (ii)  bicubic:   splatfacto on the bicubic-upsampled LR views (one LR step, then bicubic targets, no LR term);
  (iii) per-frame: splatfacto on per-frame SR of the LR views by the back-end (no render conditioning, no LR term,
                   one round);
  (iv)  sr3d:      sr3d-splatfacto: LR stage, then K rounds of SR (the back-end's use of the render as
                   configured) + the LR term;
  (o)   HR oracle: recipe (i) at factor 1, i.e. trained on the HR views themselves: what perfect SR targets give at
                   this schedule (when it barely beats (ii), no SR back-end can gain much over (ii) there).
The `self` back-end (the default) is trained once per run that uses it, for a fixed number of steps.

Scores: PSNR/SSIM of the held-out views at HR (`evaluation.evaluate_pipeline`, nerfstudio's metrics as ns-eval), wall
time, and the 3D consistency of each recipe's last SR training targets (`geometry.multiview_consistency`: PSNR
between each training view's target and its 2 nearest views' targets warped into it by the final 3DGS depth).
Writes results.json, results.md and crops_<scene>.png (HR crops of a held-out view: truth, LR, each recipe).
A recipe's finished run under `--work` (same options) is reused, so an interrupted benchmark resumes; its wall
time is the one recorded when it was trained.

    .venv/bin/python benchmarks/superres.py --scenes synth0 fruit beer
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from difix_ns.runner import budget_args, run_ns_train, splatfacto_schedule_args

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
ORACLE = "o_hr_oracle"
"""The recipe trained on the HR training views (factor 1, no SR)."""
REAL_DOWNSCALE = {"fruit": 6, "beer": 8}
"""HR = the capture shrunk this many times (fruit 605x806 -> 101x134, beer 1920x1080 -> 240x135)."""


def recipes(iterations: int, lr_iterations: int, rounds: int, backend: List[str]) -> Dict[str, List[str]]:
    """ns-train options of each recipe (all with `iterations` 3DGS steps in total), but the factor."""
    per_round = (iterations - lr_iterations) // rounds
    sr = "--pipeline.superres."
    return {
        "i_lr_only": [f"{sr}lr-iterations={iterations}", f"{sr}rounds=1", f"{sr}iterations-per-round=1",
                      f"{sr}backend=bicubic"],
        "ii_bicubic": [
            f"{sr}lr-iterations=1", f"{sr}rounds=1", f"{sr}iterations-per-round={iterations - 1}",
            f"{sr}backend=bicubic", f"{sr}color-fix=False", f"{sr}lambda-lr=0",
        ],
        "iii_per_frame": [
            f"{sr}lr-iterations=1", f"{sr}rounds=1", f"{sr}iterations-per-round={iterations - 1}",
            f"{sr}condition-on-render=False", f"{sr}lambda-lr=0", *backend,
        ],
        "iv_sr3d": [
            f"{sr}lr-iterations={lr_iterations}", f"{sr}rounds={rounds}", f"{sr}iterations-per-round={per_round}",
            *backend,
        ],
        ORACLE: [f"{sr}lr-iterations={iterations}", f"{sr}rounds=1", f"{sr}iterations-per-round=1",
                 f"{sr}backend=bicubic"],  # run at factor 1
    }  # fmt: skip


def scene_dataset(name: str, args, work: Path) -> Path:
    """The scene's HR dataset with every 8th view held out (synthetic: of its training views; real: of the
    capture, derived under work/ and never written into)."""
    from difix_ns.data.scene_io import derive_scene, read_transforms, write_derived_dataset

    out = work / "scenes" / name
    if (out / "transforms.json").is_file():
        return out
    source = work / "sources" / name
    if name.startswith("synth"):
        from difix_ns.data.synth import SynthConfig, make_synthetic_scene

        settings = SynthConfig(out=source, seed=int(name[5:]), resolution=args.resolution,
                               num_train_views=args.synth_views, num_eval_views=2, overwrite=True)  # fmt: skip
        make_synthetic_scene(settings)
        meta = read_transforms(source)
        names = list(meta["train_filenames"])
    else:
        derive_scene(REAL / name, source, REAL_DOWNSCALE.get(name, args.real_downscale))
        meta = read_transforms(source)
        names = sorted(str(f["file_path"]) for f in meta["frames"])
    held_out = names[:: args.hold_every]
    return write_derived_dataset(source, meta, out, [n for n in names if n not in held_out], held_out)


def _last_targets(run_dir: Path) -> Dict[str, Path]:
    rounds = sorted((run_dir / "sr3d").glob("round-*"))
    return {p.stem: p for p in sorted((rounds[-1] / "targets").glob("*.png"))} if rounds else {}


def target_consistency(pipeline, run_dir: Path) -> Dict[str, float]:
    """`multiview_consistency` of the last SR targets of the run in `run_dir` (its config.yml's folder), warped by
    the z-depth at HR of its final 3DGS, `pipeline` (loaded by `eval_setup`)."""
    import torch
    from PIL import Image

    from difix_ns.geometry.consistency import multiview_consistency

    targets = _last_targets(run_dir)
    model, dataset = pipeline.model, pipeline.datamanager.train_dataset
    names = [Path(p).stem for p in dataset.image_filenames]
    if not targets or set(names) - set(targets):
        return {}
    images, depths = [], []
    with torch.no_grad():
        for i, name in enumerate(names):
            camera = dataset.cameras[i : i + 1].to(model.device)
            outputs = model.get_outputs_for_camera(camera, postprocess=False)
            depths.append(model.render_z_depth(outputs, camera).cpu())
            image = np.asarray(Image.open(targets[name]).convert("RGB"), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(image).permute(2, 0, 1))
    cameras = dataset.cameras
    return multiview_consistency(torch.stack(images), torch.stack(depths), cameras.camera_to_worlds.float(),
                                 cameras.get_intrinsics_matrices().float())  # fmt: skip


def score_run(config_path: Path, description: str, consistency: bool) -> Tuple[List[object], Dict[str, float]]:
    """A finished run loaded once (`eval_setup`, test mode): its held-out views (`evaluate_pipeline`) and, with
    `consistency`, its `target_consistency` ({} without)."""
    from nerfstudio.utils.eval_utils import eval_setup

    from difix_ns.evaluation import evaluate_pipeline

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    views = evaluate_pipeline(pipeline, description)
    return views, target_consistency(pipeline, config_path.parent) if consistency else {}


def crops_figure(scene: str, views: Dict[str, object], lr_factor: int, out: Path) -> None:
    """Truth, nearest-upsampled LR and each recipe's render of the first held-out view, centre crop (half size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(views.values()))
    truth = first.ground_truth
    h, w = truth.shape[:2]
    small = truth[lr_factor // 2 :: lr_factor, lr_factor // 2 :: lr_factor]
    lr = np.repeat(np.repeat(small, lr_factor, 0), lr_factor, 1)[:h, :w]
    panels = [("truth (HR)", truth), (f"LR (x1/{lr_factor})", lr)] + [(k, v.rendered) for k, v in views.items()]
    top, left = h // 4, w // 4
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(np.clip(image[top : top + h // 2, left : left + w // 2], 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / f"crops_{scene}.png", dpi=120)
    plt.close(fig)


def finished_run(data: Path, runs: Path, name: str, options: List[str]) -> Tuple[Path, float]:
    """(config.yml, ns-train wall seconds) of the recipe's run: trained now, or an earlier run with the same options
    (its `finished.json`, written once ns-train returned), so an interrupted benchmark resumes where it stopped."""
    marker = runs / name / "finished.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["options"] == options and Path(done["config"]).is_file():
            print(f"  reusing the finished run {done['config']}", flush=True)
            return Path(done["config"]), done["wall_seconds"]
    run = run_ns_train("sr3d-splatfacto", data, runs, name, options, echo=False)
    marker.write_text(
        json.dumps({"config": str(run.config_path), "wall_seconds": run.wall_seconds, "options": options})
    )
    return run.config_path, run.wall_seconds


def run_scene(scene: str, args, work: Path) -> Dict[str, dict]:
    data = scene_dataset(scene, args, work)
    common = [
        *budget_args(args.iterations),
        *splatfacto_schedule_args(args.iterations),
        *shlex.split(args.ns_train_args),
    ]
    backend = [f"--pipeline.superres.backend={args.backend}"]
    if args.backend == "self":  # a step budget: the same network whatever else the machine runs
        backend += [
            "--pipeline.superres.self-sr.max-seconds=None",
            f"--pipeline.superres.self-sr.steps={args.self_steps}",
        ]
    results, first_views = {}, {}
    for name, options in recipes(args.iterations, args.lr_iterations, args.rounds, backend).items():
        if name not in args.recipes:
            continue
        print(f"superres benchmark: {scene} {name}", flush=True)
        options = [f"--pipeline.superres.factor={1 if name == ORACLE else args.factor}", *common, *options]
        config_path, wall_seconds = finished_run(data, work / "runs" / scene, name, options)
        views, consistency = score_run(config_path, f"Evaluating {scene} {name}", name not in ("i_lr_only", ORACLE))
        results[name] = {
            "psnr": float(np.mean([v.metrics["psnr"] for v in views])),
            "ssim": float(np.mean([v.metrics["ssim"] for v in views])),
            "target_consistency_psnr": consistency.get("psnr"), "wall_seconds": round(wall_seconds, 1),
            "ns_train_options": options,
        }  # fmt: skip
        first_views[name] = views[0]
        print(
            f"  PSNR {results[name]['psnr']:.2f} dB, SSIM {results[name]['ssim']:.4f}, "
            f"target consistency {consistency.get('psnr', float('nan')):.2f} dB, {wall_seconds:.0f} s",
            flush=True,
        )
    crops_figure(scene, first_views, args.factor, args.out)
    return results


def write_report(results: Dict[str, Dict[str, dict]], args) -> None:
    lines = [
        "# Super-resolution benchmark (benchmarks/superres.py)", "",
        f"Command: `python benchmarks/superres.py {shlex.join(sys.argv[1:])}`.", "",
        f"Factor {args.factor}, {args.iterations} 3DGS steps per recipe (sr3d: {args.lr_iterations} LR steps, then "
        f"{args.rounds} rounds), SR back-end `{args.backend}`; every {args.hold_every}th view held out and scored at "
        f"HR. Synthetic: {args.resolution} px HR, {args.synth_views} views; real captures: HR = the capture shrunk "
        f"{REAL_DOWNSCALE} times. Target consistency: PSNR between each training view's last SR target and its 2 "
        "nearest views' targets warped into it by the final 3DGS depth (valid pixels; higher = more 3D-consistent).",
        "",
    ]  # fmt: skip
    for scene, rows in results.items():
        lines += [f"## {scene}", "", f"![crops](crops_{scene}.png)", "",
                  "| recipe | PSNR (dB) | SSIM | target consistency (dB) | wall (s) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, r in rows.items():
            c = r["target_consistency_psnr"]
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {'-' if c is None else f'{c:.2f}'} | "
                         f"{r['wall_seconds']:.0f} |")  # fmt: skip
        if all(k in rows for k in ("iv_sr3d", "ii_bicubic", "iii_per_frame")):
            gains = {k: rows["iv_sr3d"]["psnr"] - rows[k]["psnr"] for k in ("ii_bicubic", "iii_per_frame")}
            lines += [
                "",
                f"sr3d over (ii): {gains['ii_bicubic']:+.2f} dB, over (iii): {gains['iii_per_frame']:+.2f} dB.",
            ]
        if ORACLE in rows and "ii_bicubic" in rows:
            oracle_gain = rows[ORACLE]["psnr"] - rows["ii_bicubic"]["psnr"]
            lines.append(f"HR oracle over (ii): {oracle_gain:+.2f} dB (training on "
                         "the HR views themselves: what perfect SR targets give at this schedule).")  # fmt: skip
        lines.append("")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/superres"))
    parser.add_argument("--work", type=Path, default=Path("outputs/superres_benchmark"))
    parser.add_argument("--scenes", nargs="+", default=["synth0", "fruit", "beer"],
                        help=f"synth<seed> or a capture under {REAL}")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=96, help="HR side of the synthetic scenes (px)")
    parser.add_argument("--synth-views", type=int, default=32, help="views of a synthetic scene (before holding out)")
    parser.add_argument("--real-downscale", type=int, default=8, help="HR shrink of a capture not in REAL_DOWNSCALE")
    parser.add_argument("--hold-every", type=int, default=8)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=600, help="3DGS steps of every recipe")
    parser.add_argument("--lr-iterations", type=int, default=300, help="LR stage of sr3d (iv)")
    parser.add_argument("--rounds", type=int, default=3, help="SR rounds of sr3d (iv)")
    parser.add_argument("--backend", default="self", help="SR back-end of (iii) and (iv)")
    parser.add_argument("--self-steps", type=int, default=400, help="training steps of the self back-end")
    parser.add_argument("--recipes", nargs="+", default=list(recipes(2, 1, 1, [])),
                        help="recipes to run (default: all four)")
    parser.add_argument("--ns-train-args", default="", help="extra ns-train options of every recipe, one string")
    args = parser.parse_args()

    work = args.work.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {scene: run_scene(scene, args, work) for scene in args.scenes}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    write_report(results, args)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
