"""`difix-ns benchmark`: methods side by side at the same budget on a sparse-view split, resumable.

For each scene (a user's dataset, or synthetic scenes of several seeds), the split is written as a derived dataset
(`splits/<scene>/transforms.json` + `split.json`; a user's scene, COLMAP or transforms.json, is first made a dataset
of ours in `scenes/<scene>/`, downscaled with `--downscale`, and gets co-visibility masks estimated from rendered
depth, `covis/<scene>/`); each method trains through the real `ns-train`, every evaluation
view is scored through nerfstudio's loading and metrics, and a run's `result.json` marks it finished, so a rerun
skips it. Outputs under `--out`: results.json (schema in `report.RESULTS_SCHEMA`), results.md (gains over each
method's baseline, then the tables), grid_<scene>.png and gains.png.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["BenchmarkConfig", "SAMPLING_SEED_OPTION", "run_benchmark"]

SAMPLING_SEED_OPTION = "--pipeline.datamanager.train-cameras-sampling-seed"
"""The ns-train option behind `BenchmarkConfig.sampling_seed`."""

SCORED_METRICS = ("psnr", "ssim", "lpips", "mpsnr", "mssim")
"""Per-view metrics kept in results.json: full image, and co-visibility-masked (mpsnr, mssim) where masks exist."""

_DEFAULT_METHODS = ("splatfacto", "difix-splatfacto", "difix-splatfacto+post", "nerfacto", "difix-nerfacto")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Measure every method side by side on a sparse-view split and write tables and figures."""

    data: Optional[Path] = None
    """A scene as users have it: a nerfstudio / instant-ngp dataset (transforms.json + images) or a COLMAP folder
    (sparse/0 + images/, read by nerfstudio's colmap_to_json); never written to. Default: synthetic scenes of
    `seeds`."""
    downscale: int = 1
    """Shrink the --data scene's images this many times (undistorted too, where its cameras have distortion) into
    <out>/scenes/<name>/, intrinsics scaled to match: every method trains and is scored at that size."""
    covis: bool = True
    """Estimate co-visibility masks of a --data scene (masked metrics mpsnr / mssim): a splatfacto trained for
    --covis-iters steps on every view gives rendered depth (an estimate; synthetic scenes have exact masks)."""
    covis_iters: int = 500
    """Training steps of the geometry splatfacto behind the estimated co-visibility masks."""
    seeds: Tuple[int, ...] = (0, 1, 2)
    """Seeds of the synthetic scenes (used when --data is not given)."""
    resolution: int = 96
    """Image size of the synthetic scenes."""
    methods: Tuple[str, ...] = _DEFAULT_METHODS
    """Methods to compare (see difix_ns.benchmark.methods.METHODS)."""
    train_every: Optional[int] = None
    """Train on every K-th view (by file name order); the rest evaluate."""
    train_views: Optional[int] = None
    """Train on N views spread along the trajectory; the rest evaluate. Neither: the dataset's own train_filenames."""
    iters: int = 1000
    """Training iterations of every method."""
    out: Path = Path("outputs/benchmark")
    """Output folder (runs, splits, results.json, results.md, PNG grids, gains.png)."""
    fixer: str = "self"
    """Fixer back-end of the difix methods: self (a NAFNet trained once per scene on its training views and shared
    by that scene's difix runs; no pretrained weights needed), difix (with --fixer-model), nafnet (with
    --fixer-model), identity."""
    fixer_model: Optional[str] = None
    """Fixer checkpoint: a folder, or a hub id such as nvidia/difix_ref for --fixer difix."""
    max_grid_views: int = 4
    """Far views shown per scene grid."""
    self_fixer_steps: Optional[int] = 400
    """NAFNet steps of the `self` fixer, per scene, with no time limit: the same fixer on a busy or a quiet machine,
    so reruns and side-by-side benchmarks compare like with like (400 steps: about a minute on 2 CPU cores).
    `None` trains for --self-fixer-seconds instead."""
    self_fixer_seconds: float = 90.0
    """NAFNet training time of the `self` fixer with --self-fixer-steps None (its steps then follow the machine's
    load: 90 s gave 258 to 600 steps on these 2-core machines)."""
    self_fixer_iters: Optional[int] = None
    """Iterations of each of the `self` fixer's 2 leave-out reconstructions (default: half of --iters)."""
    sampling_seed: Optional[int] = None
    """Order in which every method draws its training views (`--pipeline.datamanager.train-cameras-sampling-seed`,
    splatfacto methods only); None: the data manager's default (42). A gain compares runs of one seed: alone, the
    seed moves fruit's gain over splatfacto from +0.65 to +2.29 dB (benchmarks/results/schedule_seeds_fruit)."""
    fixer_method_args: str = ""
    """Extra ns-train options for the methods with a fixer (difix-*), one string, after the benchmark's own; the
    baselines are not changed. Give it with `=`, as in `--fixer-method-args="--pipeline.progressive.fix-every 125"`
    (a separate value starting with `--` reads as an option)."""

    def main(self) -> None:
        run_benchmark(self)


def _check(config: BenchmarkConfig) -> None:
    from difix_ns.benchmark.methods import METHODS

    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    if config.iters < 1:
        raise ValueError(f"iters must be >= 1, got {config.iters}")
    if config.data is None and not config.seeds:
        raise ValueError("give --data or at least one synthetic seed")
    if isinstance(config.downscale, bool) or not isinstance(config.downscale, int) or config.downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {config.downscale!r}")
    if config.covis_iters < 1:
        raise ValueError(f"covis_iters must be >= 1, got {config.covis_iters}")
    if config.self_fixer_iters is not None and config.self_fixer_iters < 2:
        raise ValueError(
            f"self_fixer_iters must be >= 2 (leave-out reconstruction steps), got {config.self_fixer_iters}"
        )
    if config.self_fixer_steps is not None and config.self_fixer_steps < 1:
        raise ValueError(f"self_fixer_steps must be >= 1 (NAFNet steps), got {config.self_fixer_steps}")
    if config.sampling_seed is not None:
        rays = [m for m in config.methods if METHODS[m].method.endswith("nerfacto")]
        if rays:
            raise ValueError(
                f"sampling_seed orders whole training images, which {rays} do not draw (they sample rays): leave "
                "those methods out or the seed unset"
            )
    try:
        shlex.split(config.fixer_method_args)
    except ValueError as error:
        raise ValueError(f"fixer_method_args {config.fixer_method_args!r} cannot be split: {error}") from None


def _scenes(config: BenchmarkConfig) -> List[Tuple[str, Path]]:
    if config.data is not None:  # the user's scene as a dataset of ours under <out>/scenes (scene_io.derive_scene)
        from difix_ns.data.scene_io import derive_scene

        source = Path(config.data).resolve()
        name = source.parent.name if source.is_file() else source.name
        if (source / "synth_meta.json").is_file():  # a `difix-ns synth` scene, read as it is (exact masks)
            if config.downscale != 1:
                raise ValueError("--downscale is for captured scenes; make a synthetic scene with --resolution")
            return [(name, source)]
        folder = Path(config.out) / "scenes" / name
        made = {"source": str(source), "downscale": config.downscale}
        if (folder / "derived.json").is_file() and json.loads((folder / "derived.json").read_text()) != made:
            raise ValueError(  # its runs would be resumed at another resolution
                f"{config.out} holds a benchmark of {json.loads((folder / 'derived.json').read_text())}, not of "
                f"{made}: choose another --out"
            )
        derive_scene(source, folder, config.downscale)
        (folder / "derived.json").write_text(json.dumps(made))
        return [(name, folder)]
    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    scenes = []
    for seed in config.seeds:
        folder = Path(config.out) / "scenes" / f"synth{seed}"
        if not (folder / "transforms.json").is_file():
            make_synthetic_scene(SynthConfig(out=folder, seed=seed, resolution=config.resolution, overwrite=True))
        scenes.append((f"synth{seed}", folder))
    return scenes


def _save_png(image, path: Path) -> None:
    from PIL import Image
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype("uint8")).save(path)


def self_fixer_budget_line(config: BenchmarkConfig) -> str:
    """The report's line on how long each scene's `self` fixer trained."""
    if config.self_fixer_steps is not None:
        return f"The self fixers trained {config.self_fixer_steps} NAFNet steps each (no time limit).\n\n"
    return (
        f"The self fixers trained for {config.self_fixer_seconds:g} s each (their NAFNet steps follow the machine's "
        "load).\n\n"
    )


def _resumed_pairs_seconds(pairs: Path) -> float:
    """What the curation units that a self fixer found finished (copied pairs, an interrupted benchmark) took to
    make, so `fixer s` counts them; a unit with no record of its time (made by an older version) counts 0."""
    from difix_ns.data.curate import unit_seconds

    report = json.loads((pairs / "report.json").read_text())
    return sum(s or 0.0 for s in unit_seconds(pairs, report["units_resumed"]).values())


def _shared_self_fixer(config: BenchmarkConfig, split_folder: Path, folder: Path) -> Tuple[Path, float]:
    """The scene's `self` fixer, trained once on the split's training views and shared by every difix run of the
    scene (each run would train the same one: same views, settings and seed). Returns (fixer folder, seconds it
    took to make), the seconds kept in `folder/seconds.json` so a resumed benchmark reports the first training."""
    import time

    from difix_ns.benchmark.methods import self_fixer_config
    from difix_ns.training.self_fixer import train_self_fixer

    fixer_config = self_fixer_config(
        config.iters, config.self_fixer_seconds, config.self_fixer_iters, config.self_fixer_steps
    )
    budget = {"fold_iterations": fixer_config.iterations, "nafnet_seconds": fixer_config.max_seconds}
    if config.self_fixer_steps is not None:  # only then: records of time-bounded fixers stay valid
        budget["nafnet_steps"] = fixer_config.steps
    record = folder / "seconds.json"
    if not record.is_file():  # written once the fixer is trained: a rerun uses that fixer as it is
        start = time.perf_counter()
        train_self_fixer(split_folder, folder, fixer_config)
        seconds = time.perf_counter() - start + _resumed_pairs_seconds(folder / "pairs")
        record.write_text(json.dumps({"seconds": seconds, "budget": budget}))
    made = json.loads(record.read_text())
    if made.get("budget", budget) != budget:  # records from before the budget was kept are taken as they are
        raise ValueError(
            f"the self fixer in {folder} was made with {made['budget']}, this benchmark asks for {budget}: "
            "choose another --out, or delete that folder to train it again"
        )
    return folder / "train" / "fixer", float(made["seconds"])


def _train_and_evaluate(
    recipe, split_folder: Path, run_dir: Path, config: BenchmarkConfig, fixer_model: Optional[str]
) -> dict:
    """Train one run and score its views; writes run_dir/result.json (the resume marker) and renders."""
    import torch

    from difix_ns.benchmark.methods import budget_args, fixer_args
    from difix_ns.runner import run_ns_train
    from difix_ns.evaluation import evaluate_views

    args = budget_args(recipe, config.iters, cpu=not torch.cuda.is_available()) + list(recipe.args)
    if config.sampling_seed is not None:
        args.append(f"{SAMPLING_SEED_OPTION}={config.sampling_seed}")
    if recipe.uses_fixer:
        args += fixer_args(config.fixer, fixer_model) + shlex.split(config.fixer_method_args)
    trained = run_ns_train(recipe.method, split_folder, run_dir.parent, run_dir.name, args)
    views = []
    for view in evaluate_views(trained.config_path, description=f"Evaluating {run_dir.parent.name}/{run_dir.name}"):
        _save_png(view.ground_truth, run_dir / "ground_truth" / f"{view.filename}")
        _save_png(view.rendered, run_dir / "renders" / f"{view.filename}")
        if view.rendered_fixed is not None:
            _save_png(view.rendered_fixed, run_dir / "renders_fixed" / f"{view.filename}")
        views.append({"filename": view.filename, "metrics": view.metrics})
    result = {
        "config": str(trained.config_path),
        "wall_seconds": trained.wall_seconds,
        "seconds_per_iteration": trained.seconds_per_iteration,
        "peak_memory_mb": trained.peak_memory_mb,
        "views": views,
    }
    tmp = run_dir / "result.json.tmp"  # the resume marker: renamed into place only once complete
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(run_dir / "result.json")
    return result


def _scored_views(run: dict, split, fixed: bool) -> List[dict]:
    bins = {Path(name).name: split.bin[name] for name in split.eval}
    views = []
    for view in run["views"]:
        metrics = view["metrics"]
        if fixed:
            chosen = {k.removesuffix("_fixed"): v for k, v in metrics.items() if k.endswith("_fixed")}
        else:
            chosen = {k: v for k, v in metrics.items() if not k.endswith("_fixed")}
        chosen = {k: v for k, v in chosen.items() if k in SCORED_METRICS}
        views.append({"file_path": view["filename"], "bin": bins[view["filename"]], "metrics": chosen})
    return views


def _grid(config: BenchmarkConfig, scene: str, split, runs_dir: Path, recipes) -> Path:
    from difix_ns.benchmark.report import comparison_grid

    ordered = sorted(split.eval, key=split.distance.get, reverse=True)
    far = [Path(n).name for n in ordered if split.bin[n] == "far"] or [Path(n).name for n in ordered]
    rows = far[: config.max_grid_views]
    first = runs_dir / recipes[0].run_key
    columns = [("ground truth", {r: first / "ground_truth" / r for r in rows})]
    captions = {}
    for recipe in recipes:
        folder = runs_dir / recipe.run_key / ("renders_fixed" if recipe.fixed else "renders")
        columns.append((recipe.name, {r: folder / r for r in rows}))
        run = json.loads((runs_dir / recipe.run_key / "result.json").read_text())
        key = "psnr_fixed" if recipe.fixed else "psnr"
        for view in run["views"]:
            if view["filename"] in rows:
                captions[(recipe.name, view["filename"])] = f"PSNR {view['metrics'][key]:.2f}"
    path = Path(config.out) / f"grid_{scene}.png"
    comparison_grid(path, rows, columns, captions)
    return path


def _fid_status() -> Dict[str, object]:
    from difix_ns.metrics import inception_weights_path

    path = inception_weights_path()
    if path.is_file():
        return {"available": True, "reason": f"Inception weights at {path}"}
    return {"available": False, "reason": f"FID left out: Inception weights not found at {path}"}


def _fid(run_dir: Path, fixed: bool) -> float:
    import numpy as np
    import torch
    from PIL import Image
    from torchmetrics.image.fid import FrechetInceptionDistance

    def load(folder: Path) -> torch.Tensor:
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

    fid = FrechetInceptionDistance(feature=2048)
    fid.update(load(run_dir / "ground_truth"), real=True)
    fid.update(load(run_dir / ("renders_fixed" if fixed else "renders")), real=False)
    return float(fid.compute())


_SELF_FIXER_MIN_VIEWS = 3
"""Training views the `self` fixer needs: its leave-out folds train on the others."""


def _splits(config: BenchmarkConfig, recipes) -> List[Tuple[str, Path, dict, object]]:
    """(scene, source folder, transforms.json, split) of every scene, checked against every method's needs before
    the first run starts."""
    from difix_ns.benchmark.split import choose_split
    from difix_ns.data.scene_io import read_transforms

    splits = []
    for scene, source in _scenes(config):
        meta = read_transforms(source)
        splits.append((scene, source, meta, choose_split(meta, config.train_every, config.train_views)))
    if config.fixer == "self" and config.fixer_model is None and any(r.uses_fixer for r in recipes):
        short = {scene: len(split.train) for scene, _, _, split in splits if len(split.train) < _SELF_FIXER_MIN_VIEWS}
        if short:
            raise ValueError(
                f"the self fixer needs at least {_SELF_FIXER_MIN_VIEWS} training views per scene (leave-out folds), "
                f"but the split gives {short}; use more training views (--train-every / --train-views) or another "
                "--fixer"
            )
    return splits


def _run_scene(
    config: BenchmarkConfig, scene: str, source: Path, meta: dict, split, recipes, fid: Dict[str, object]
) -> Tuple[dict, List[dict]]:
    """Train (or resume) every method on one scene's split and score it; returns the scene entry and the runs."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from difix_ns.benchmark.report import summarize
    from difix_ns.benchmark.split import write_split_dataset

    split_folder = write_split_dataset(source, meta, split, Path(config.out) / "splits" / scene)
    covis = {"estimated": False, "note": "no co-visibility masks (--covis off)"}
    if (Path(source) / "synth_meta.json").is_file():  # exact co-visibility masks of this split: mpsnr / mssim
        from difix_ns.data.synth import write_split_covisibility

        write_split_covisibility(Path(source), split.train, split.eval, split_folder)
        covis = {"estimated": False, "note": "exact co-visibility masks (synthetic scene)"}
    elif config.covis:  # a real scene: masks estimated from a geometry splatfacto's rendered depth
        from difix_ns.benchmark.split import estimate_split_covisibility

        CONSOLE.rule(f"[bold]{scene}: co-visibility masks from rendered depth ({config.covis_iters} splatfacto steps)")
        covis = estimate_split_covisibility(
            source, meta, split, split_folder, Path(config.out) / "covis" / scene, config.covis_iters
        )
        CONSOLE.print(f"{scene}: masks in {split_folder / 'covis'}, {covis['seconds']:.0f} s, "
                      f"{100 * covis['coverage']:.0f} % of the eval pixels co-visible")
    runs_dir = Path(config.out) / "runs" / scene
    fixer_model, fixer_seconds, runs = config.fixer_model, 0.0, []
    for recipe in recipes:
        run_dir = runs_dir / recipe.run_key
        if recipe.uses_fixer and config.fixer == "self" and fixer_model is None:
            CONSOLE.rule(f"[bold]{scene}: the self fixer (training views only), shared by the difix runs")
            path, fixer_seconds = _shared_self_fixer(config, split_folder, runs_dir / "self_fixer")
            fixer_model = str(path.resolve())
        if (run_dir / "result.json").is_file():
            CONSOLE.print(f"{scene}/{recipe.run_key}: finished earlier, kept ({run_dir / 'result.json'})")
            run = json.loads((run_dir / "result.json").read_text())
        else:
            CONSOLE.rule(f"[bold]{scene}: {recipe.run_key} ({recipe.method}, {config.iters} iterations)")
            run = _train_and_evaluate(recipe, split_folder, run_dir, config, fixer_model)
        views = _scored_views(run, split, recipe.fixed)
        metrics = summarize(views)
        if fid["available"]:
            metrics["all"]["fid"] = _fid(run_dir, recipe.fixed)
        runs.append(
            {
                "scene": scene,
                "method": recipe.name,
                "wall_seconds": run["wall_seconds"],
                "fixer_seconds": fixer_seconds if recipe.uses_fixer else 0.0,
                "seconds_per_iteration": run["seconds_per_iteration"],
                "peak_memory_mb": run["peak_memory_mb"],
                "metrics": metrics,
                "views": views,
                **_self_fixer_record(run),
            }
        )
    _grid(config, scene, split, runs_dir, recipes)
    return {"name": scene, "split": split.to_dict(), "covisibility": covis}, runs


def _self_fixer_record(run: dict) -> dict:
    """{"self_fixer": the run's record of its self fixer (`SELF_FIXER_DECISION`)}, or {} for a run without one."""
    from difix_ns.pipeline import SELF_FIXER_DECISION

    record = Path(run["config"]).parent / SELF_FIXER_DECISION
    return {"self_fixer": json.loads(record.read_text())} if record.is_file() else {}


def _rejected_fixer_notes(results: dict) -> List[str]:
    """One line per scene whose difix runs did without their self fixer in a stage, naming the checks it failed
    (`SELF_FIXER_CHECKS`; a record older than the per-stage checks was judged on all its validation pairs)."""
    from difix_ns.training.self_fixer import SELF_FIXER_CHECKS, failed_self_fixer_checks

    def scores(record: dict, prefix: str) -> str:
        fixed, unfixed = record.get(f"{prefix}validation_psnr"), record.get(f"{prefix}validation_psnr_unfixed")
        return "" if fixed is None or unfixed is None else f" (PSNR {fixed:.2f} dB fixed vs {unfixed:.2f} dB)"

    def failed(record: dict, stage: str) -> str:
        checks = failed_self_fixer_checks(record, stage) or [c for c in SELF_FIXER_CHECKS if c.prefix == ""]
        return " nor on ".join(f"{check.pairs}{scores(record, check.prefix)}" for check in checks)

    (update,) = (check for check in SELF_FIXER_CHECKS if check.stage == "update")
    notes = {}
    for run in results["runs"]:
        record = run.get("self_fixer")
        if record is None or run["scene"] in notes:
            continue
        if not record["used"]:
            notes[run["scene"]] = (
                f"{run['scene']}: the self fixer did not beat doing nothing on {failed(record, 'update')}, so the "
                "difix runs used the identity fixer and made no pseudo views: they train as their base method."
            )
        elif not record.get("postprocess", True):
            notes[run["scene"]] = (
                f"{run['scene']}: the self fixer beat doing nothing on {update.pairs}{scores(record, update.prefix)}"
                f" but not on {failed(record, 'postprocess')}: the difix runs used it in the progressive update, and "
                "post-processing left their renders as they were."
            )
    return list(notes.values())


def _write_reports(config: BenchmarkConfig, results: dict, recipes, fid: Dict[str, object]) -> None:
    """results.json, results.md (gains table first) and gains.png."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from difix_ns.benchmark.report import gains_figure, gains_table, markdown_tables, validate_results

    out = Path(config.out)
    validate_results(results)
    tmp = out / "results.json.tmp"  # complete or absent: never a half-written results.json
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    header = (
        f"# difix-ns benchmark\n\n{config.iters} iterations per method; split: "
        f"{results['scenes'][0]['split']['rule']}; distance bins: near <= 0.5, mid <= 1.5, far > 1.5 training-camera "
        f"spacings. {fid['reason']}. `train s`: ns-train wall time; `fixer s`: making the fixer outside ns-train "
        "(the scene's `self` fixer, trained once on the training views and shared by its difix runs). "
        f"Written by `difix-ns benchmark` from the runs under {out / 'runs'}.\n\n"
    )
    if config.sampling_seed is not None:
        header += f"Every method drew its training views with sampling seed {config.sampling_seed}.\n\n"
    if config.fixer_method_args:
        header += f"Extra ns-train options of the methods with a fixer: `{config.fixer_method_args}`.\n\n"
    if config.fixer == "self":
        header += self_fixer_budget_line(config)
    notes = [f"{s['name']}: {s['covisibility']['note']}" for s in results["scenes"] if "covisibility" in s]
    if any(s.get("covisibility", {}).get("estimated") for s in results["scenes"]):
        header += "Masked metrics (mpsnr, mssim): " + "; ".join(notes) + ".\n\n"
    for note in _rejected_fixer_notes(results):
        header += note + "\n\n"
    pairs = [(r.name, r.baseline) for r in recipes if r.baseline in config.methods]
    gains_md = ""
    if pairs:
        gains_md = gains_table(results, pairs) + "\n"
        gains_figure(out / "gains.png", results, pairs)
    (out / "results.md").write_text(header + gains_md + markdown_tables(results, config.methods))
    CONSOLE.print((out / "results.md").read_text())
    figures = f"{out}/grid_*.png" + (f", {out / 'gains.png'}" if pairs else "")
    CONSOLE.print(
        f"[bold green]Benchmark written:[/bold green] {out / 'results.md'}, {out / 'results.json'}, " + figures
    )


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run (or resume) the benchmark; returns the results written to results.json."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from difix_ns.benchmark.methods import METHODS

    _check(config)
    recipes = [METHODS[m] for m in config.methods]
    fid = _fid_status()
    if not fid["available"]:
        CONSOLE.print(f"[yellow]{fid['reason']}[/yellow]")
    config_json = json.loads(json.dumps(asdict(config), default=str))
    results = {"version": 1, "config": config_json, "scenes": [], "runs": [], "fid": fid}
    for scene, source, meta, split in _splits(config, recipes):
        entry, runs = _run_scene(config, scene, source, meta, split, recipes, fid)
        results["scenes"].append(entry)
        results["runs"] += runs
    _write_reports(config, results, recipes, fid)
    return results
