"""`difix-ns curate`: (degraded, clean, reference) training triplets for a fixer, made from any nerfstudio dataset.

Only the dataset's *training* views are ever read (`train_filenames` of transforms.json, or nerfstudio's default
90/10 split when the file has no explicit split): evaluation images never reach a fixer's training data. Each
strategy is a list of *units*; a unit writes a derived dataset (symlinks to the training images it uses, a
transforms.json whose `test_filenames` are the views to render), trains it with `ns-train <method>` (its fixer stages
off; a subprocess through `difix_ns.runner`), renders the target views with `difix_ns.evaluation.evaluate_views` and
stores one triplet per target view and checkpoint. Dataset reading and derived datasets are
`difix_ns.data.scene_io`'s.

- `leave-out` (sparse reconstruction): the training views are split into `num_folds` interleaved folds; each fold
  is left out of training and rendered (degraded = render, clean = the real photo).
- `underfit`: one model on all training views; the training views rendered from checkpoints at
  `underfit_fractions` of the iteration budget (25-75 % by default).
- `cross-reference`: with camera groups (the frame key `group_key`), each group is left out and rendered, the
  other groups are the references.
- `compression` (splat methods): one model on all training views, stored with the real codec (`difix-ns compress`)
  at budgets of its float32 PLY size / each of `compression_ratios` and decoded; degraded = the decoded scene's
  render, clean = the full scene's render (not the photo), at the training cameras and `compression_novel_views`
  novel cameras per training camera (`difix_ns.compression.restoration`; its reference is the degraded render).

The reference of a triplet is the real photo of the nearest training view of that unit's model (translation +
rotation angle, `difix_ns.progressive.poses`), never the target itself. With `warped_references` K > 0 (leave-out,
underfit, cross-reference), a triplet also gets the K nearest training photos of that unit's model (never the
target itself) warped into the target view by the unit reconstruction's depth, with their validity masks: the
inputs a fixer with warped references gets at run time.

Output folder: `manifest.jsonl` (one JSON object per triplet: paths relative to the folder, `pose_distance`,
`strategy`, `source_scene`, ...; `warped`/`warped_mask`/`warped_views` lists with warped references),
`pairs/<unit>/step-N/*_{degraded,clean,reference,warped<k>,warpmask<k>}.png`, `units/<unit>/pairs.jsonl`
(written last: a unit with this file is done and is kept as is on a re-run, so an interrupted run resumes; use a
new folder after changing options), `units/<unit>/seconds.json` (what making the unit took), and
`report.json` (skipped images, counts, disk use, each unit's seconds). Missing or unreadable training images are
reported and skipped.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from difix_ns.data.scene_io import SceneViews, image_file, read_training_views, write_derived_dataset

__all__ = [
    "CurateConfig",
    "CurateResult",
    "curate",
    "read_manifest",
    "train_nerfstudio",
]


Strategy = Literal["leave-out", "underfit", "cross-reference", "compression"]
_STRATEGIES = ("leave-out", "underfit", "cross-reference", "compression")
_TIMESTAMP = "curate"
UNIT_SECONDS = "seconds.json"
"""Per unit folder: {"seconds": what making the unit took}."""


@dataclass(frozen=True)
class CurateConfig:
    """Make (degraded, clean, reference) fixer-training triplets from a nerfstudio dataset's training views."""

    data: Path = Path("data/synth")
    """Nerfstudio dataset folder (with transforms.json). Only its training views are read."""
    out: Path = Path("outputs/pairs")
    """Output folder; an existing one is resumed (finished units are kept)."""
    strategies: Tuple[Strategy, ...] = ("leave-out", "underfit")
    """Strategies to run: leave-out (sparse reconstruction), underfit, cross-reference (needs camera groups),
    compression (splat methods: the real codec's artifacts)."""
    method: str = "difix-splatfacto"
    """Registered ns-train method used to reconstruct (without any fixer stage)."""
    iterations: int = 300
    """Training iterations of every reconstruction."""
    num_folds: int = 4
    """leave-out: number of interleaved folds of training views, each left out once (2 or more)."""
    underfit_fractions: Tuple[float, ...] = (0.25, 0.5, 0.75)
    """underfit: render the checkpoints nearest to these fractions of the iteration budget."""
    compression_ratios: Tuple[float, ...] = (25.0, 50.0, 100.0, 200.0)
    """compression: budgets as ratios to the float32 PLY size (`difix-ns compress --budget PLY/ratio`)."""
    compression_novel_views: int = 2
    """compression: novel cameras per training camera (between it and a neighbour) rendered besides it."""
    group_key: str = "camera_group"
    """cross-reference: frame key in transforms.json that names a frame's camera group."""
    ns_train_args: str = ""
    """Extra ns-train options for every reconstruction, one string: --ns-train-args="--pipeline.model.sh-degree 1"."""
    seed: int = 0
    """Seed of the reconstructions (nerfstudio's --machine.seed)."""
    keep_runs: bool = False
    """Keep the reconstructions (checkpoints) and derived datasets after their pairs are written."""
    max_disk_mb: float = 4096.0
    """Stop starting new units once the output folder exceeds this size (MB); the run can be resumed later."""
    warped_references: int = 0
    """Also store this many nearest training photos warped into each target view by the reconstruction's depth,
    with their masks (for fixers with warped inputs); leave-out, underfit and cross-reference only."""
    leave_out_own_fractions: Tuple[float, ...] = ()
    """leave-out: also render each fold's own training views from the checkpoints nearest these fractions of its
    budget (strategy `leave-out-own`: under-fit renders, and near-perfect ones at 1.0, which teach a fixer to leave
    good renders alone), without another reconstruction. Empty: none."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if not (Path(self.data) / "transforms.json").is_file():
            raise ValueError(f"data={str(self.data)!r} has no transforms.json (not a nerfstudio dataset)")
        if not self.strategies:
            raise ValueError("strategies is empty; choose from " + ", ".join(_STRATEGIES))
        for s in self.strategies:
            if s not in _STRATEGIES:
                raise ValueError(f"unknown strategy {s!r}; choose from {', '.join(_STRATEGIES)}")
        if self.iterations < 2:
            raise ValueError(f"iterations must be >= 2, got {self.iterations}")
        if self.num_folds < 2:
            raise ValueError(f"num_folds must be >= 2, got {self.num_folds}")
        bad = [f for f in self.underfit_fractions if not 0.0 < f <= 1.0]
        if bad or not self.underfit_fractions:
            raise ValueError(f"underfit_fractions must be non-empty values in (0, 1], got {self.underfit_fractions}")
        if any(not 0.0 < f <= 1.0 for f in self.leave_out_own_fractions):
            raise ValueError(f"leave_out_own_fractions must be values in (0, 1], got {self.leave_out_own_fractions}")
        if not self.compression_ratios or min(self.compression_ratios) <= 1.0:
            raise ValueError(f"compression_ratios must be values > 1, got {self.compression_ratios}")
        if self.compression_novel_views < 0:
            raise ValueError(f"compression_novel_views must be >= 0, got {self.compression_novel_views}")
        if self.max_disk_mb <= 0:
            raise ValueError(f"max_disk_mb must be > 0, got {self.max_disk_mb}")
        if self.warped_references < 0:
            raise ValueError(f"warped_references must be >= 0, got {self.warped_references}")

    def main(self) -> None:
        """Run the curation and print a summary."""
        from rich.console import Console

        console = Console()
        try:
            result = curate(self)
        except ValueError as err:
            console.print(f"[bold red]difix-ns curate: {err}")
            raise SystemExit(2) from err
        console.print(f"[bold green]{result.num_pairs} triplets[/] in [cyan]{result.manifest}")


@dataclass
class CurateResult:
    """What `curate` produced."""

    manifest: Path
    """manifest.jsonl with every triplet made so far."""
    num_pairs: int
    """Number of triplets in the manifest."""
    units_run: List[str]
    """Units computed in this call."""
    units_resumed: List[str]
    """Units found finished and kept."""
    skipped_images: Dict[str, str]
    """Training images reported and skipped."""
    disk_mb: float
    """Size of the output folder at the end."""
    stopped_for_disk: bool = False
    """True if units were left undone because the folder exceeded max_disk_mb."""


# ------------------------------------------------------------------------------------------------ training


def _no_fixer_args(config: object) -> List[str]:
    """Reconstructions for curation are plain: no progressive pseudo views, no post-processing, identity fixer
    (only options the method has; a fixer-trained-on-itself recursion is impossible)."""
    args = []
    if hasattr(getattr(config.pipeline, "progressive", None), "enabled"):
        args += ["--pipeline.progressive.enabled", "False"]
    model = config.pipeline.model
    if hasattr(model, "postprocess"):
        args += ["--pipeline.model.postprocess", "False"]
    if hasattr(getattr(model, "fixer", None), "backend"):
        args += ["--pipeline.model.fixer.backend", "identity"]
    return args


def train_nerfstudio(
    dataset: Path,
    run_dir: Path,
    method: str,
    iterations: int,
    steps_per_save: int,
    extra_args: Sequence[str] = (),
    seed: int = 0,
) -> Path:
    """Train `method` on `dataset` through `ns-train` (a subprocess, `difix_ns.runner`) with its fixer stages off
    and the splatfacto schedule fitted to `iterations`, keeping a checkpoint every `steps_per_save` steps; returns
    the run's config.yml (`run_dir/run/<method>/curate/config.yml`). `extra_args` are ns-train options."""
    from nerfstudio.plugins.registry import discover_methods

    from difix_ns.runner import budget_args, run_ns_train, splatfacto_schedule_args

    methods, _ = discover_methods()
    if method not in methods:
        raise ValueError(f"unknown ns-train method {method!r}; registered plugin methods: {sorted(methods)}")
    base = methods[method]
    schedule = splatfacto_schedule_args(iterations) if hasattr(base.pipeline.model, "warmup_length") else []
    args = [
        *budget_args(iterations, steps_per_save, keep_checkpoints=True),
        f"--machine.seed={seed}",
        *schedule,
        *_no_fixer_args(base),
        *extra_args,
    ]
    return run_ns_train(method, dataset, run_dir, "run", args, timestamp=_TIMESTAMP, echo=False).config_path


def _checkpoint_steps(config_path: Path) -> List[int]:
    folder = config_path.parent / "nerfstudio_models"
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.ckpt"))


def _config_at_step(config_path: Path, step: int) -> Path:
    import yaml

    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    config.load_step = step
    path = config_path.with_name(f"config_step{step}.yml")
    path.write_text(yaml.dump(config), "utf8")
    return path


# ------------------------------------------------------------------------------------------------ units


@dataclass(frozen=True)
class _Unit:
    name: str
    strategy: str
    train: Tuple[str, ...]
    targets: Tuple[str, ...]
    fractions: Tuple[float, ...]
    own_fractions: Tuple[float, ...] = ()
    """Checkpoint fractions at which the unit's training views are rendered too (leave-out-own pairs)."""

    def all_fractions(self) -> Tuple[float, ...]:
        return tuple(sorted(set(self.fractions) | set(self.own_fractions)))


def _leave_out_units(names: List[str], num_folds: int, own_fractions: Tuple[float, ...] = ()) -> List[_Unit]:
    if len(names) < 3:
        raise ValueError(f"leave-out needs at least 3 usable training views, got {len(names)}")
    folds = min(num_folds, len(names) - 1)
    units = []
    for k in range(folds):
        targets = tuple(names[k::folds])
        train = tuple(n for n in names if n not in targets)
        units.append(_Unit(f"leave-out-{k}of{folds}", "leave-out", train, targets, (1.0,), own_fractions))
    return units


def _cross_reference_units(scene: SceneViews, key: str) -> List[_Unit]:
    groups: Dict[str, List[str]] = {}
    for name in scene.usable:
        if key in scene.frames[name]:
            groups.setdefault(str(scene.frames[name][key]), []).append(name)
    if len(groups) < 2:
        return []
    units = []
    for g, members in sorted(groups.items()):
        train = tuple(n for n in scene.usable if n not in members)
        units.append(_Unit(f"cross-reference-{g}", "cross-reference", train, tuple(members), (1.0,)))
    return units


def _plan(config: CurateConfig, scene: SceneViews, console) -> List[_Unit]:
    units: List[_Unit] = []
    for strategy in config.strategies:
        if strategy == "leave-out":
            units += _leave_out_units(scene.usable, config.num_folds, tuple(config.leave_out_own_fractions))
        elif strategy == "underfit":
            fr = tuple(sorted(set(config.underfit_fractions)))
            units.append(_Unit("underfit", "underfit", tuple(scene.usable), tuple(scene.usable), fr))
        elif strategy == "compression":
            units.append(_Unit("compression", "compression", tuple(scene.usable), tuple(scene.usable), (1.0,)))
        elif strategy == "cross-reference":
            found = _cross_reference_units(scene, config.group_key)
            if not found:
                console.print(
                    f"[yellow]cross-reference skipped: the training frames carry fewer than 2 camera groups "
                    f"(frame key {config.group_key!r})"
                )
            units += found
    return units


def _nearest(target: str, candidates: Sequence[str], frames: Dict[str, dict]) -> Tuple[str, float, float]:
    """(name, translation, rotation angle) of the candidate view nearest to `target` (translation + angle)."""
    from difix_ns.progressive.poses import pose_distance_parts

    others = [name for name in candidates if name != target]
    if not others:
        raise ValueError(f"no reference view for {target}: the unit has no other training view")
    pose = np.asarray([frames[target]["transform_matrix"]], dtype=np.float64)
    translation, angle = pose_distance_parts(pose, np.asarray([frames[n]["transform_matrix"] for n in others]))
    best = int((translation[0] + angle[0]).argmin())
    return others[best], float(translation[0, best]), float(angle[0, best])


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)).save(path)


def _save_warped(view, folder: Path, stem: str) -> Dict[str, List[Path]]:
    """Each warped view of `view` (a ViewResult) as `<stem>_warped<k>.png` and its mask as `<stem>_warpmask<k>.png`
    (0/255); empty lists when it has none."""
    from PIL import Image

    paths: Dict[str, List[Path]] = {"warped": [], "warped_mask": []}
    if view.warped is None:
        return paths
    rgb = view.warped.rgb[0].permute(0, 2, 3, 1).float().cpu().numpy()  # [K, H, W, 3]
    mask = view.warped.mask[0, :, 0].float().cpu().numpy() > 0.5  # [K, H, W]
    for k in range(rgb.shape[0]):
        paths["warped"].append(folder / f"{stem}_warped{k}.png")
        paths["warped_mask"].append(folder / f"{stem}_warpmask{k}.png")
        _save_png(rgb[k], paths["warped"][-1])
        Image.fromarray(mask[k].astype(np.uint8) * 255).save(paths["warped_mask"][-1])
    return paths


def _load_reference(path: Path, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BICUBIC)
        return np.asarray(image, dtype=np.float32) / 255.0


def _reconstruct(unit: _Unit, config: CurateConfig, scene: SceneViews, unit_dir: Path) -> Path:
    """The unit's reconstruction (trained unless its last checkpoint exists); returns its config.yml."""
    source = {**scene.meta, "frames": list(scene.frames.values())}
    rendered = unit.targets + (unit.train if unit.own_fractions else ())
    dataset = write_derived_dataset(scene.root, source, unit_dir / "dataset", unit.train, rendered)
    wanted = sorted({max(1, int(round(f * config.iterations))) for f in unit.all_fractions() if f < 1.0})
    every = math.gcd(*wanted) if wanted else config.iterations
    config_path = unit_dir / "run" / "run" / config.method / _TIMESTAMP / "config.yml"
    if config_path.is_file() and config.iterations - 1 in _checkpoint_steps(config_path):
        return config_path
    extra = shlex.split(config.ns_train_args)
    return train_nerfstudio(dataset, unit_dir / "run", config.method, config.iterations, every, extra, config.seed)


def _write_triplet(
    view, target: str, unit: _Unit, step: int, config: CurateConfig, scene: SceneViews, out: Path, strategy: str
) -> dict:
    """Save one rendered view as a (degraded, clean, reference) triplet; returns its manifest record."""
    from difix_ns.metrics import psnr

    ref_name, t, r = _nearest(target, unit.train, scene.frames)
    stem = Path(view.filename).stem
    folder = out / "pairs" / unit.name / f"step-{step:06d}"
    paths = {k: folder / f"{stem}_{k}.png" for k in ("degraded", "clean", "reference")}
    height, width = view.rendered.shape[:2]
    _save_png(view.rendered, paths["degraded"])
    _save_png(view.ground_truth, paths["clean"])
    _save_png(_load_reference(image_file(scene.root, ref_name), (height, width)), paths["reference"])
    warped = _save_warped(view, folder, stem)
    extra = {}
    if view.warped is not None:
        extra = {k: [str(p.relative_to(out)) for p in v] for k, v in warped.items()}
        extra["warped_views"] = list(view.warped_views or [])
    return {
        "id": f"{unit.name}/{stem}@{step}",
        **{k: str(p.relative_to(out)) for k, p in paths.items()},
        **extra,
        "view": target,
        "reference_view": ref_name,
        "pose_distance": {"translation": t, "rotation_deg": math.degrees(r), "distance": t + r},
        "strategy": strategy,
        "source_scene": str(Path(config.data).resolve()),
        "unit": unit.name,
        "step": step,
        "iterations": config.iterations,
        "height": height,
        "width": width,
        "psnr_degraded": psnr(view.rendered, view.ground_truth),
    }


def _run_unit(unit: _Unit, config: CurateConfig, scene: SceneViews, out: Path) -> List[dict]:
    from difix_ns.evaluation import evaluate_views

    unit_dir = out / "units" / unit.name
    start = time.perf_counter()
    config_path = _reconstruct(unit, config, scene, unit_dir)
    available = _checkpoint_steps(config_path)

    def steps_of(fractions: Tuple[float, ...]) -> set:
        return {min(available, key=lambda s: abs(s - f * config.iterations)) for f in fractions}

    target_steps, own_steps = steps_of(unit.fractions), steps_of(unit.own_fractions)
    names = unit.targets + (unit.train if unit.own_fractions else ())
    by_basename = {Path(n).name: n for n in names}
    if len(by_basename) != len(names):
        raise ValueError(f"unit {unit.name}: target image names are not unique by file name")
    own = set(unit.train) if unit.own_fractions else set()
    records = []
    if unit.strategy == "compression":
        records = _compression_pairs(config_path, unit, config, out)
        target_steps = own_steps = set()
    for step in sorted(target_steps | own_steps):
        step_config = _config_at_step(config_path, step)
        views = evaluate_views(
            step_config, f"Rendering {unit.name} @ {step}", warped_references=config.warped_references
        )
        for view in views:
            target = by_basename.get(view.filename) or by_basename[Path(view.filename).stem]
            if step in (own_steps if target in own else target_steps):
                strategy = f"{unit.strategy}-own" if target in own else unit.strategy
                records.append(_write_triplet(view, target, unit, step, config, scene, out, strategy))
    # what the unit cost, kept so that a resume (or a copy of these pairs) can still say what making them took
    (unit_dir / UNIT_SECONDS).write_text(json.dumps({"seconds": time.perf_counter() - start}))
    tmp = unit_dir / "pairs.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(unit_dir / "pairs.jsonl")  # written last: marks the unit as done
    if not config.keep_runs:
        shutil.rmtree(unit_dir / "run", ignore_errors=True)
        shutil.rmtree(unit_dir / "dataset", ignore_errors=True)
    return records


def _compression_pairs(config_path: Path, unit: _Unit, config: CurateConfig, out: Path) -> List[dict]:
    """The compression strategy's pairs: the unit's reconstruction through the real codec at each ratio."""
    from rich.progress import Progress

    from difix_ns.compression.command import read_scene
    from difix_ns.compression.restoration import write_restoration_pairs

    with Progress(transient=True) as progress:
        scene = read_scene(config_path, progress=progress)
        records = write_restoration_pairs(
            scene, out, config.compression_ratios, config.compression_novel_views, unit.name, config.seed,
            str(Path(config.data).resolve()), progress,
        )  # fmt: skip
    for record in records:
        record["iterations"] = config.iterations
    return records


def _folder_mb(folder: Path) -> float:
    total = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 2**20


def read_manifest(path: Path) -> List[dict]:
    """The triplets of a manifest.jsonl, with `degraded`/`clean`/`reference` (and the `warped`/`warped_mask`
    lists, where present) made absolute."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            for key in ("degraded", "clean", "reference"):
                record[key] = str((path.parent / record[key]).resolve())
            for key in ("warped", "warped_mask"):
                if key in record:
                    record[key] = [str((path.parent / p).resolve()) for p in record[key]]
            records.append(record)
    return records


def unit_seconds(out: Path, names: List[str]) -> Dict[str, Optional[float]]:
    """Seconds each finished unit under the curation folder `out` took to make; None for a unit made before
    units kept their time."""
    record = {name: Path(out) / "units" / name / UNIT_SECONDS for name in names}
    return {name: json.loads(path.read_text())["seconds"] if path.is_file() else None for name, path in record.items()}


def curate(config: CurateConfig) -> CurateResult:
    """Run every selected strategy (resuming finished units) and write manifest.jsonl and report.json."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    config.validate()
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = read_training_views(Path(config.data))
    for name, why in scene.skipped.items():
        console.print(f"[yellow]curate: skipping training image {name}: {why}")
    units = _plan(config, scene, console)
    ran, resumed, stopped = [], [], False
    all_records: List[dict] = []
    start = time.perf_counter()
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("Curating pairs", total=len(units))
        for unit in units:
            done = out / "units" / unit.name / "pairs.jsonl"
            if done.is_file():
                all_records += [json.loads(x) for x in done.read_text().splitlines() if x.strip()]
                resumed.append(unit.name)
            elif _folder_mb(out) > config.max_disk_mb:
                stopped = True
                console.print(
                    f"[yellow]curate: {out} exceeds max_disk_mb={config.max_disk_mb:g}; {unit.name} and later "
                    "units left undone (raise the limit and re-run to resume)"
                )
                break
            else:
                all_records += _run_unit(unit, config, scene, out)
                ran.append(unit.name)
            progress.advance(task)
    manifest = out / "manifest.jsonl"
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in all_records))
    tmp.replace(manifest)
    disk = _folder_mb(out)
    report = {
        "source_scene": str(Path(config.data).resolve()),
        "strategies": list(config.strategies),
        "warped_references": config.warped_references,
        "num_pairs": len(all_records),
        "pairs_per_strategy": {s: sum(r["strategy"] == s for r in all_records) for s in config.strategies},
        "training_views_used": scene.usable,
        "skipped_images": scene.skipped,
        "units_run": ran,
        "units_resumed": resumed,
        "unit_seconds": unit_seconds(out, ran + resumed),
        "stopped_for_disk": stopped,
        "disk_mb": round(disk, 3),
        "max_disk_mb": config.max_disk_mb,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(
        f"curate: {len(all_records)} triplets ({len(ran)} units run, {len(resumed)} resumed, "
        f"{len(scene.skipped)} images skipped), {disk:.1f} MB on disk (limit {config.max_disk_mb:g} MB)"
    )
    return CurateResult(manifest, len(all_records), ran, resumed, dict(scene.skipped), disk, stopped)
