"""Rate-distortion of `difix-ns compress`, with artifact-aware restoration (issue 13), on synthetic scenes and the
real captures (CPU).

Per scene: a difix-splatfacto run (fixer stages off) is trained with ns-train on the scene's training views, read
and scored once, and compressed at budgets of PLY size / each `--ratios` value. Restoration pairs (compressed
render, uncompressed render at the training cameras and novel cameras between them; `compression.restoration`) are
written for every scene (with clean pairs: the uncompressed render as its own input), and two NAFNet restorers
are trained with `train_fixer`: **generic** on the pairs of the *other* scenes only (at most
`--generic-pairs-per-scene` of each, `--restorer-steps`; NiFi's setting; not counted in the rate) and **per-scene**,
one per budget, on the scene's own pairs of that budget's file (`--per-scene-steps`; its weight files counted in
the rate; a user gets those pairs with `difix-ns compress --pairs-out DIR`). The same budgets are also compressed
with `--finetune-steps` of fine-tuning after pruning, quantization-aware from each `--finetune-quantize-from`
fraction of the steps on (1 =
a float fine-tune), with the generic restorer's strength chosen by `compress --restorer`. `compress` chooses its
bits per attribute by rate-distortion (the default `--bits auto`). Once the generic restorer exists, every budget
is also compressed with `compress --restorer` (the restorer's strength chosen on calibration cameras against the
uncompressed scene and stored in the file) and scored
side by side with the full-strength restorer. Each file is decompressed into a run folder with each
restorer as its post-processing fixer (`difix-ns decompress --restorer`) and evaluated on the held-out views with
nerfstudio's metrics (`evaluation.evaluate_views`: `psnr` = compressed, `psnr_fixed` = restored). Writes
results.json, report.md and rd.png. Work (datasets, runs, files, pairs, restorers) goes to `--work` and is
reused when it exists, so an interrupted run resumes.

    .venv/bin/python benchmarks/compression_rd.py --seeds 0 1 --real fruit beer
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _dataset(name: str, args, work: Path) -> Path:
    """The scene's dataset under work/ (synthetic `synth<seed>`, or a real capture derived, never written into)."""
    folder = work / "scenes" / name
    if (folder / "transforms.json").is_file():
        return folder
    if name.startswith("synth"):
        from difix_ns.data.synth import SynthConfig, make_synthetic_scene

        return make_synthetic_scene(SynthConfig(out=folder, seed=int(name[5:]), resolution=args.resolution))
    from difix_ns.data.scene_io import derive_scene

    return derive_scene(REAL / name, folder, args.downscale)


def _train(name: str, data: Path, args, work: Path) -> Path:
    from difix_ns.runner import budget_args, run_ns_train, splatfacto_schedule_args

    config = work / "runs" / name / "difix-splatfacto" / "run" / "config.yml"
    if config.is_file() and any((config.parent / "nerfstudio_models").glob("step-*.ckpt")):
        return config
    extra = [*budget_args(args.iterations), *splatfacto_schedule_args(args.iterations),
             "--pipeline.model.postprocess=False", "--pipeline.model.fixer.backend=identity"]  # fmt: skip
    return run_ns_train("difix-splatfacto", data, work / "runs", name, extra).config_path


def _evaluate(config_path: Path, reference=None) -> Dict[str, float]:
    """Mean held-out metrics of a run (`_fixed` = restored); PSNR to the uncompressed run's renders when given."""
    from difix_ns.evaluation import evaluate_views
    from difix_ns.metrics import psnr as _psnr

    views = evaluate_views(config_path, description=f"Evaluating {config_path.parent.name}")
    keys = [k for k in views[0].metrics if k.split("_")[0] in ("psnr", "ssim", "lpips") and "masked" not in k]
    out = {k: float(np.mean([v.metrics[k] for v in views])) for k in keys}
    if reference is not None:
        out["psnr_vs_uncompressed"] = float(np.mean([_psnr(v.rendered, r.rendered) for v, r in zip(views, reference)]))
        if views[0].rendered_fixed is not None:
            out["psnr_fixed_vs_uncompressed"] = float(
                np.mean([_psnr(v.rendered_fixed, r.rendered) for v, r in zip(views, reference)])
            )
    return out, views


def _prepare_scene(name: str, args, work: Path) -> dict:
    """Train, compress at every ratio, write restoration pairs; cached in work/<name>.json."""
    from difix_ns.compression.command import compress_scene, read_scene, uncompressed_ply_bytes
    from difix_ns.compression.restoration import write_manifest, write_restoration_pairs

    state_file = work / f"{name}.json"
    if state_file.is_file():
        return json.loads(state_file.read_text())
    data = _dataset(name, args, work)
    start = time.perf_counter()
    config_path = _train(name, data, args, work)
    train_seconds = time.perf_counter() - start
    base, _ = _evaluate(config_path)
    scene = read_scene(config_path)
    n, degree = scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree)
    base.update(num_gaussians=n, ply_bytes=uncompressed_ply_bytes(n, degree), train_seconds=train_seconds)
    files = []
    for ratio in sorted(args.ratios):
        path = work / "files" / name / f"{ratio:g}x.dxs"
        summary = compress_scene(scene, path, budget_bytes=int(base["ply_bytes"] / ratio))
        files.append({"target_ratio": ratio, "file": str(path), "budget": int(base["ply_bytes"] / ratio), **summary})
    start = time.perf_counter()
    pairs = work / "pairs" / name
    pairs.mkdir(parents=True, exist_ok=True)
    compressed = {f["target_ratio"]: Path(f["file"]) for f in files}
    records = write_restoration_pairs(scene, pairs, args.ratios, args.novel_views, name, source_scene=name,
                                      compressed=compressed)
    write_manifest(records, pairs)
    state = {"name": name, "data": str(data), "config": str(config_path), "uncompressed": base, "files": files,
             "read_seconds": scene.seconds, "pairs": len(records),
             "pairs_seconds": time.perf_counter() - start}  # fmt: skip
    state_file.write_text(json.dumps(state, indent=2))
    return state


def _variant_files(state: dict, variant: str, work: Path, **options) -> List[dict]:
    """Every budget compressed again with `compress_scene` `options` (fine-tuning, a restorer); cached in
    work/<name>-<variant>.json."""
    from difix_ns.compression.command import compress_scene, read_scene

    cache = work / f"{state['name']}-{variant}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    scene = read_scene(Path(state["config"]))
    files = []
    for f in state["files"]:
        path = work / "files" / state["name"] / f"{f['target_ratio']:g}x-{variant}.dxs"
        summary = compress_scene(scene, path, budget_bytes=f["budget"], **options)
        files.append({"target_ratio": f["target_ratio"], "file": str(path), **summary})
    cache.write_text(json.dumps(files, indent=2))
    return files


def _selected_manifest(manifests: List[Path], out: Path, cap: int = 0, ratio: float = None) -> Path:
    """One manifest (absolute paths) of the pairs of `manifests`: only those of compression `ratio` when given, and
    at most `cap` of each source (0 = all), drawn evenly (seeded): every scene weighs about the same in a generic
    restorer, however many views it has."""
    from difix_ns.data.curate import read_manifest
    from difix_ns.compression.restoration import write_manifest

    records = []
    for manifest in manifests:
        mine = [r for r in read_manifest(manifest) if ratio is None or r["ratio"] == ratio]
        keep = np.random.default_rng(0).permutation(len(mine))[: cap or len(mine)]
        records += [mine[i] for i in sorted(keep)]
    out.mkdir(parents=True, exist_ok=True)
    return write_manifest(records, out)


def _restorer(name: str, manifests: List[Path], args, out: Path, width: int, steps: int, ratio: float = None) -> Path:
    """A NAFNet restorer trained on `manifests` (generic: several scenes, capped per scene; per-scene: one scene's
    pairs of one compression `ratio`), cached in `out`."""
    from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

    if (out / "fixer" / "config.json").is_file():
        return out / "fixer"
    cap = args.generic_pairs_per_scene if len(manifests) > 1 else 0
    if cap or ratio is not None:
        manifests = [_selected_manifest(manifests, out / "pairs", cap, ratio)]
    config = TrainFixerConfig(
        manifests=tuple(manifests), out=out, backend="nafnet", nafnet_width=width,
        steps=steps, max_seconds=args.restorer_seconds, crop_size=args.crop_size, batch_size=8,
        perceptual="off", val_every=max(50, steps // 4), save_every=10**9, seed=0,
    )  # fmt: skip
    print(f"training the {name} restorer on {len(manifests)} manifest(s)")
    return train_fixer(config)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _score_scene(state: dict, restorers: Dict[str, Dict[float, Path]], work: Path, finetuned: Dict[float, List[dict]],
                 calibrated: List[dict]) -> List[dict]:  # fmt: skip
    """Every file of one scene decompressed with each restorer of its ratio (`restorers[mode][ratio]`) at full
    strength and evaluated; the calibrated files and the fine-tuned ones (per quantize-from fraction) with the generic
    restorer at their stored strength."""
    from difix_ns.compression.command import decompress_file

    name = state["name"]
    _, base_views = _evaluate(Path(state["config"]))
    rows = []
    for f in state["files"]:
        row = {k: f[k] for k in ("target_ratio", "budget", "bytes", "ratio", "num_gaussians", "seconds", "bits")}
        generic = restorers["generic"][f["target_ratio"]]
        for mode, by_ratio in restorers.items():
            restorer = by_ratio[f["target_ratio"]]
            start = time.perf_counter()
            config, _ = decompress_file(Path(f["file"]), work / "decoded" / name / f"{f['target_ratio']:g}-{mode}",
                                        restorer, strength=1.0)  # fmt: skip
            row["decompress_seconds"] = time.perf_counter() - start
            metrics, _ = _evaluate(config, base_views)
            row.update({k: v for k, v in metrics.items() if "fixed" not in k})
            row.update({k.replace("fixed", mode): v for k, v in metrics.items() if "fixed" in k})
        tuned = next(t for t in calibrated if t["target_ratio"] == f["target_ratio"])
        config, _ = decompress_file(Path(tuned["file"]), work / "decoded" / name / f"{f['target_ratio']:g}-calibrated",
                                    generic)  # fmt: skip
        metrics, _ = _evaluate(config, base_views)
        row.update({"calibrated_bytes": tuned["bytes"], "calibrated_num_gaussians": tuned["num_gaussians"],
                    "strength": tuned["restorer_strength"], "calibrated_seconds": tuned["seconds"],
                    "psnr_calibrated": metrics["psnr"], "psnr_calibrated_generic": metrics["psnr_fixed"],
                    "ssim_calibrated_generic": metrics["ssim_fixed"]})  # fmt: skip
        row["finetuned"] = []
        for quantize_from, files in finetuned.items():
            tuned = next(t for t in files if t["target_ratio"] == f["target_ratio"])
            config, _ = decompress_file(Path(tuned["file"]), work / "decoded" / name /
                                        f"{f['target_ratio']:g}-ft-q{quantize_from:g}", generic)  # fmt: skip
            metrics, _ = _evaluate(config, base_views)
            row["finetuned"].append({
                "quantize_from": quantize_from, "bytes": tuned["bytes"], "num_gaussians": tuned["num_gaussians"],
                "seconds": tuned["seconds"], "strength": tuned["restorer_strength"], "psnr": metrics["psnr"],
                "ssim": metrics["ssim"], "psnr_generic": metrics["psnr_fixed"], "ssim_generic": metrics["ssim_fixed"],
            })  # fmt: skip
        per_scene = restorers["per_scene"][f["target_ratio"]]
        row["per_scene_restorer_bytes"] = _folder_bytes(per_scene)
        row["per_scene_seconds"] = json.loads((per_scene.parent / "summary.json").read_text())["seconds"]
        row["per_scene_bytes"] = row["bytes"] + row["per_scene_restorer_bytes"]
        row["per_scene_ratio"] = state["uncompressed"]["ply_bytes"] / row["per_scene_bytes"]
        rows.append(row)
    return rows


def _figure(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = results["scenes"]
    fig, axes = plt.subplots(1, len(scenes), figsize=(4.2 * len(scenes), 4.4), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        rows = scene["budgets"]
        ax.plot([r["bytes"] for r in rows], [r["psnr"] for r in rows], "o-", label="compressed")
        ax.plot([r["bytes"] for r in rows], [r["psnr_generic"] for r in rows], "s-", label="+ generic restorer")
        ax.plot([r["calibrated_bytes"] for r in rows], [r["psnr_calibrated_generic"] for r in rows], "P-",
                label="+ generic restorer, strength chosen by compress")  # fmt: skip
        ax.plot([r["per_scene_bytes"] for r in rows], [r["psnr_per_scene"] for r in rows], "^-",
                label="+ per-scene restorer (rate incl.)")  # fmt: skip
        for tuned in zip(*(r["finetuned"] for r in rows)):
            label = f"fine-tuned (quantization-aware from {tuned[0]['quantize_from']:g})"
            ax.plot([t["bytes"] for t in tuned], [t["psnr"] for t in tuned], "v--", label=label)
            ax.plot([t["bytes"] for t in tuned], [t["psnr_generic"] for t in tuned], "D--",
                    label=label + " + generic restorer, chosen strength")  # fmt: skip
        ax.axhline(scene["uncompressed"]["psnr"], color="gray", linestyle="--", label="uncompressed")
        ax.set_xscale("log")
        ax.set_title(scene["name"])
        ax.set_xlabel("bytes")
        ax.set_ylabel("held-out PSNR (dB)")
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the plots, where it hides no curve
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.22, 1, 1))
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)


def _report(results: dict, out: Path) -> None:
    lines = [
        "# Compression rate-distortion with artifact-aware restoration (CPU)", "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. Produced by benchmarks/compression_rd.py.",
        "", "PSNR/SSIM on each scene's held-out views against the photos. *generic*: a NAFNet restorer trained only "
        "on the other scenes' pairs of every budget (not in the rate); *per-scene*: one per budget, trained on this "
        "scene's pairs of that budget's file, its weight files added to the rate. Loss = uncompressed PSNR - restored "
        "PSNR (goal <= 1.0 dB at >= 100x, generic).", "",
    ]  # fmt: skip
    for scene in results["scenes"]:
        base = scene["uncompressed"]
        lines += [
            f"## {scene['name']}", "",
            f"Uncompressed: {base['num_gaussians']} Gaussians, float32 PLY {base['ply_bytes']} B, PSNR "
            f"{base['psnr']:.2f} dB, SSIM {base['ssim']:.3f}. "
            f"Restorer training: generic {scene['generic_seconds']:.0f} s "
            f"on {scene['generic_pairs']} pairs of {', '.join(scene['generic_scenes'])}; per-scene: "
            f"{results['config']['per_scene_steps']} steps on this scene's pairs of each budget "
            f"({scene['pairs']} pairs over all budgets and the clean ones).", "",
            "| ratio | file (B) | Gaussians | PSNR compressed | + generic | gain | loss vs uncompressed | "
            "+ per-scene | gain | per-scene restorer (B, s) | rate incl. restorer | SSIM compressed / generic / "
            "per-scene | bits (means,scales,quats,opacities,dc) | compress (s) | decompress (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for r in scene["budgets"]:
            lines.append(
                f"| {r['ratio']:.1f}x | {r['bytes']} | {r['num_gaussians']} | {r['psnr']:.2f} | "
                f"{r['psnr_generic']:.2f} "
                f"| {r['psnr_generic'] - r['psnr']:+.2f} | {base['psnr'] - r['psnr_generic']:.2f} | "
                f"{r['psnr_per_scene']:.2f} | {r['psnr_per_scene'] - r['psnr']:+.2f} | "
                f"{r['per_scene_restorer_bytes']}, "
                f"{r['per_scene_seconds']:.0f} | {r['per_scene_ratio']:.1f}x | "
                f"{r['ssim']:.3f} / {r['ssim_generic']:.3f} / "
                f"{r['ssim_per_scene']:.3f} | {','.join(str(b) for b in r['bits'].values())} | {r['seconds']:.1f} | "
                f"{r['decompress_seconds']:.1f} |"
            )
        lines += ["", "Generic restorer at the strength `compress --restorer` chose on calibration cameras (training "
                  "cameras and novel cameras between them, against the uncompressed scene) and stored in the file:", "",
                  "| ratio | file (B) | strength | PSNR compressed | + generic, chosen strength | gain | loss vs "
                  "uncompressed | SSIM | compress (s) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in scene["budgets"]:
            lines.append(
                f"| {base['ply_bytes'] / r['calibrated_bytes']:.1f}x | {r['calibrated_bytes']} | {r['strength']:g} | "
                f"{r['psnr_calibrated']:.2f} | {r['psnr_calibrated_generic']:.2f} | "
                f"{r['psnr_calibrated_generic'] - r['psnr_calibrated']:+.2f} | "
                f"{base['psnr'] - r['psnr_calibrated_generic']:.2f} | {r['ssim_calibrated_generic']:.3f} | "
                f"{r['calibrated_seconds']:.1f} |"
            )
        if scene["budgets"][0]["finetuned"]:
            lines += ["", f"Fine-tuned after pruning ({results['config']['finetune_steps']} steps; quantization-aware "
                      "from the given fraction of them on, 1 = float), generic restorer at the strength `compress "
                      "--restorer` chose, same budgets:", "",
                      "| ratio | quantization-aware from | file (B) | Gaussians | PSNR | strength | "
                      "+ generic restorer | loss vs uncompressed (restored) | SSIM / restored | compress (s) |",
                      "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
            for r in scene["budgets"]:
                for t in r["finetuned"]:
                    lines.append(
                        f"| {base['ply_bytes'] / t['bytes']:.1f}x | {t['quantize_from']:g} | {t['bytes']} | "
                        f"{t['num_gaussians']} | {t['psnr']:.2f} | {t['strength']:g} | {t['psnr_generic']:.2f} | "
                        f"{base['psnr'] - t['psnr_generic']:.2f} | {t['ssim']:.3f} / {t['ssim_generic']:.3f} | "
                        f"{t['seconds']:.1f} |"
                    )
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression"))
    parser.add_argument("--work", type=Path, default=Path("outputs/compression_rd"))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--real", nargs="*", default=["fruit", "beer"], help=f"captures under {REAL}")
    parser.add_argument("--downscale", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--ratios", type=float, nargs="+", default=[50, 100, 200, 400, 800])
    parser.add_argument("--novel-views", type=int, default=2)
    parser.add_argument("--restorer-seconds", type=float, default=None, help="time budget of each restorer (default "
                        "none: --restorer-steps only, so the restorers do not depend on the machine's load)")
    parser.add_argument("--restorer-steps", type=int, default=600, help="training steps of a generic restorer")
    parser.add_argument("--per-scene-steps", type=int, default=3000, help="training steps of a per-scene restorer "
                        "(one per budget, on its own few pairs)")
    parser.add_argument("--generic-pairs-per-scene", type=int, default=300, help="at most this many pairs of each "
                        "other scene in a generic restorer's training set (0 = all)")
    parser.add_argument("--restorer-width", type=int, default=16, help="NAFNet width of the generic restorers")
    parser.add_argument("--per-scene-width", type=int, default=8, help="NAFNet width of the per-scene restorers "
                        "(their weights count in the rate)")
    parser.add_argument("--crop-size", type=int, default=48)
    parser.add_argument("--finetune-quantize-from", type=float, nargs="+", default=[0.5], help="fine-tuned files "
                        "render the quantized values from this fraction of the steps on (one variant per value; 1 = "
                        "float)")
    parser.add_argument("--finetune-steps", type=int, default=600, help="also compress with this many fine-tune "
                        "steps after pruning (0 = skip)")
    args = parser.parse_args()
    names = [f"synth{s}" for s in args.seeds] + list(args.real)
    if len(names) < 2:
        raise ValueError("need at least 2 scenes (the generic restorer of a scene trains on the others)")
    if min(args.ratios) <= 1:
        raise ValueError(f"--ratios must be values > 1, got {args.ratios}")
    args.names = names
    return args


def main() -> None:
    from difix_ns.compression.restoration import restorer_manifests

    args = _parse()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    states = {name: _prepare_scene(name, args, args.work) for name in args.names}
    manifests = {name: args.work / "pairs" / name / "manifest.jsonl" for name in args.names}
    scenes = []
    for name, state in states.items():
        others = [n for n in args.names if n != name]
        folder = args.work / "restorers" / name
        generic = _restorer(f"generic ({name})", restorer_manifests(manifests, name, "generic"), args,
                            folder / "generic", args.restorer_width, args.restorer_steps)  # fmt: skip
        # per-scene: one restorer per budget, on that file's own pairs (a user's `compress --pairs-out`)
        own = restorer_manifests(manifests, name, "per-scene")
        restorers = {"generic": {ratio: generic for ratio in args.ratios},
                     "per_scene": {ratio: _restorer(f"per-scene {ratio:g}x ({name})", own, args,
                                                    folder / f"per_scene_{ratio:g}x", args.per_scene_width,
                                                    args.per_scene_steps, ratio) for ratio in args.ratios}}  # fmt: skip
        generic_summary = json.loads((generic.parent / "summary.json").read_text())
        scenes.append({
            **{k: state[k] for k in ("name", "uncompressed", "pairs", "pairs_seconds", "read_seconds")},
            "generic_scenes": others,
            "generic_pairs": sum(min(states[n]["pairs"], args.generic_pairs_per_scene or states[n]["pairs"])
                                 for n in others),
            "generic_seconds": generic_summary["seconds"],
            "generic_summary": generic_summary,
            "budgets": _score_scene(state, restorers, args.work,
                                    {q: _variant_files(state, f"finetuned{args.finetune_steps}-q{q:g}", args.work,
                                                       finetune_steps=args.finetune_steps, finetune_quantize_from=q,
                                                       restorer=generic)
                                     for q in args.finetune_quantize_from} if args.finetune_steps else {},
                                    _variant_files(state, "calibrated", args.work, restorer=generic)),
        })  # fmt: skip
    results = {
        "command": "python benchmarks/compression_rd.py " + shlex.join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch CPU",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenes": scenes,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    _report(results, args.out)
    _figure(results, args.out)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
