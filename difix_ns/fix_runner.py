"""The work behind `difix-ns fix` (heavy imports live here; see `fix_command.py` for the documented behaviour)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from difix_ns.fixers.base import WarpedViews, resize_refs
from difix_ns.fixers.config import FixerConfig
from difix_ns.data.scene_io import frame_cameras, frame_poses, read_transforms
from difix_ns.fix_command import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FixCommandConfig, FixSummary, nearest_reference

__all__ = ["run"]


# ------------------------------------------------------------------------------------------------ image I/O
def read_image(path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB float32 [H,W,3] in [0,1] and the alpha channel (uint8 [H,W]) if any. Raises on unreadable files."""
    with Image.open(path) as img:
        img.load()
        alpha = np.asarray(img.getchannel("A")) if img.mode in ("RGBA", "LA", "PA") else None
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float32)
            scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            gray = np.clip(arr / scale, 0, 1)
            return np.repeat(gray[..., None], 3, axis=2), alpha
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return rgb, alpha


def write_image(path: Path, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> None:
    data = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(data, "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(alpha, "L"))
        if path.suffix.lower() in (".jpg", ".jpeg"):
            img = img.convert("RGB")
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    img.save(path, **kwargs)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------------ references
def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _load_references(cfg: FixCommandConfig) -> list[tuple[str, torch.Tensor]]:
    if cfg.ref is None:
        return []
    if not cfg.ref.exists():
        raise FileNotFoundError(f"--ref not found: {cfg.ref}")
    files = _list_images(cfg.ref) if cfg.ref.is_dir() else [cfg.ref]
    if not files:
        raise ValueError(f"--ref folder {cfg.ref} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    refs = []
    for path in files:
        try:
            refs.append((path.name, _to_tensor(read_image(path)[0])))
        except Exception as err:  # noqa: BLE001 - a reference is required input: fail with its name
            raise ValueError(f"cannot read reference image {path}: {err}") from err
    return refs


def _assign_references(
    cfg: FixCommandConfig, names: list[str], refs: list[tuple[str, torch.Tensor]]
) -> tuple[dict[str, int], list[str]]:
    """Reference index per input name, and the notes to print (frames without poses, etc.)."""
    if not refs:
        return {}, []
    if cfg.poses is None:
        return {n: 0 for n in names}, []
    poses = frame_poses(read_transforms(cfg.poses))
    ref_poses = frame_poses(read_transforms(cfg.ref_poses or cfg.poses))
    ref_matrices = [ref_poses.get(name, ref_poses.get(Path(name).stem)) for name, _ in refs]
    if any(m is None for m in ref_matrices):
        lacking = [refs[i][0] for i, m in enumerate(ref_matrices) if m is None]
        return {n: 0 for n in names}, [f"references without a pose ({', '.join(lacking[:5])}): fixed reference"]
    assignment, no_pose = {}, []
    for name in names:
        pose = poses.get(name, poses.get(Path(name).stem))
        if pose is None:
            no_pose.append(name)
            assignment[name] = 0
        else:
            assignment[name] = nearest_reference(pose, ref_matrices, cfg.rotation_weight)
    notes = [f"{len(no_pose)} frames without a pose use the first reference"] if no_pose else []
    return assignment, notes


class _Warper:
    """Warped references of `--depths`/`--ref-depths`: for a frame, its `count` nearest references (by pose) warped
    into it by its depth map (`difix_ns.geometry.warp_references`)."""

    def __init__(self, cfg: FixCommandConfig, refs: list[tuple[str, torch.Tensor]], count: int) -> None:
        if cfg.ref_depths is None or cfg.poses is None or not refs:
            raise ValueError("--depths needs --ref, --ref-depths and --poses (with the frames' intrinsics)")
        for folder in (cfg.depths, cfg.ref_depths):
            if folder is None or not folder.is_dir():
                raise FileNotFoundError(f"depth folder not found: {folder}")
        self.cfg, self.refs, self.count = cfg, refs, min(count, len(refs))
        self.frames = frame_cameras(read_transforms(cfg.poses))
        ref_cameras = frame_cameras(read_transforms(cfg.ref_poses or cfg.poses))
        missing = [name for name, _ in refs if name not in ref_cameras and Path(name).stem not in ref_cameras]
        if missing:
            raise ValueError(f"references without a pose in the transforms.json: {', '.join(missing[:5])}")
        cameras = [ref_cameras.get(name, ref_cameras.get(Path(name).stem)) for name, _ in refs]
        self.ref_c2w = torch.stack([torch.from_numpy(c.c2w[:3]) for c in cameras]).float()
        self.ref_intrinsics = torch.stack(
            [torch.from_numpy(c.intrinsics_at(image.shape[-2:])) for c, (_, image) in zip(cameras, refs)]
        ).float()
        self.ref_depth = [self._depth(cfg.ref_depths, name, image.shape[-2:]) for name, image in refs]
        if any(d is None for d in self.ref_depth):
            lacking = [refs[i][0] for i, d in enumerate(self.ref_depth) if d is None]
            raise ValueError(f"references without a depth map in {cfg.ref_depths}: {', '.join(lacking[:5])}")

    @staticmethod
    def _depth(folder: Path, name: str, size: tuple) -> Optional[torch.Tensor]:
        path = folder / f"{Path(name).stem}.npy"
        if not path.is_file():
            return None
        depth = torch.from_numpy(np.load(path)).float()
        if tuple(depth.shape) != tuple(size) or not torch.isfinite(depth).all():
            raise ValueError(
                f"depth map {path} must be finite with the image's size {tuple(size)}, got {tuple(depth.shape)}"
            )
        return depth

    def __call__(self, name: str, size: tuple) -> Optional[WarpedViews]:
        """The frame's warped references (batch of 1), or None without its pose or depth map."""
        from difix_ns.geometry.warp import warp_references
        from difix_ns.progressive.poses import nearest_views

        camera = self.frames.get(name, self.frames.get(Path(name).stem))
        depth = self._depth(self.cfg.depths, name, size) if camera is not None else None  # type: ignore[arg-type]
        if camera is None or depth is None:
            return None
        index = nearest_views(torch.from_numpy(camera.c2w[None, :3]).float(), self.ref_c2w, self.count,
                              rotation_weight=self.cfg.rotation_weight)[0][0].tolist()
        rgb, valid, _ = warp_references(
            torch.stack([self.refs[i][1] for i in index]),
            torch.stack([self.ref_depth[i] for i in index]),
            self.ref_c2w[index],
            self.ref_intrinsics[index],
            depth,
            torch.from_numpy(camera.c2w[:3]).float(),
            torch.from_numpy(camera.intrinsics_at(size)).float(),
        )
        return WarpedViews(rgb[None].clamp(0, 1), valid[None].float())


# ------------------------------------------------------------------------------------------------ running
def _fix_batch(
    fixer: Any,
    images: list[torch.Tensor],
    refs: Optional[list[torch.Tensor]],
    warped: Optional[list[Optional[WarpedViews]]] = None,
) -> torch.Tensor:
    x = torch.stack(images)
    r = None
    if refs is not None:
        size = tuple(x.shape[-2:])
        r = torch.stack([resize_refs(ref[None, None], size)[0] for ref in refs])
    views = None
    if warped is not None and fixer.warped_references > 0:
        h, w = x.shape[-2:]
        fitted = [(v or WarpedViews.none(1, 1, h, w, x)).with_count(fixer.warped_references) for v in warped]
        views = WarpedViews(torch.cat([v.rgb for v in fitted]), torch.cat([v.mask for v in fitted]))
    return fixer.fix(x, r, views)


def _check_paths(cfg: FixCommandConfig) -> None:
    if not cfg.input.exists():
        raise FileNotFoundError(f"input not found: {cfg.input}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    out = cfg.output.resolve()
    if cfg.input.is_dir() and out == cfg.input.resolve():
        raise ValueError(
            f"output folder {cfg.output} is the input folder; choose another (inputs are never overwritten)"
        )
    if cfg.input.is_dir() and not _list_images(cfg.input):
        raise ValueError(f"input folder {cfg.input} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if cfg.input.is_file():
        if cfg.input.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"input file {cfg.input} is not a video ({', '.join(VIDEO_EXTENSIONS)}); pass a folder")
        if (out / cfg.input.name).resolve() == cfg.input.resolve():
            raise ValueError(f"output folder {cfg.output} would overwrite the input video {cfg.input}")


def _progress(cfg: FixCommandConfig):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]fix[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=cfg.quiet,
    )


def _run_folder(cfg: FixCommandConfig, fixer: Any, refs: list, summary: FixSummary) -> list[str]:
    files = _list_images(cfg.input)
    if not files:
        raise ValueError(f"input folder {cfg.input} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    assignment, notes = _assign_references(cfg, [p.name for p in files], refs)
    summary.reference_of = {n: refs[i][0] for n, i in assignment.items()}
    warper = _Warper(cfg, refs, fixer.warped_references) if cfg.depths is not None and fixer.warped_references else None
    if cfg.depths is not None and warper is None:
        notes.append(f"--depths ignored: the {cfg.backend} fixer takes no warped references")
    pending: list[tuple[Path, torch.Tensor, Optional[np.ndarray]]] = []

    def flush() -> None:
        if not pending:
            return
        ref_list = [refs[assignment[p.name]][1] for p, _, _ in pending] if refs else None
        try:
            warped = None if warper is None else [warper(p.name, tuple(t.shape[-2:])) for p, t, _ in pending]
            out = _fix_batch(fixer, [t for _, t, _ in pending], ref_list, warped).permute(0, 2, 3, 1).cpu().numpy()
        except (ValueError, RuntimeError) as err:
            for p, _, _ in pending:
                summary.failed[p.name] = f"fixer failed: {err}"
        else:
            for (p, _, alpha), rgb in zip(pending, out):
                try:
                    write_image(cfg.output / p.name, rgb, alpha)
                    summary.written.append(p.name)
                except Exception as err:  # noqa: BLE001 - reported per file
                    summary.failed[p.name] = f"cannot write: {err}"
        pending.clear()

    with _progress(cfg) as progress:
        task = progress.add_task(str(cfg.input), total=len(files))
        for path in files:
            if (cfg.output / path.name).exists() and not cfg.overwrite:
                summary.failed[path.name] = "output exists (use --overwrite)"
                progress.advance(task)
                continue
            try:
                rgb, alpha = read_image(path)
            except Exception as err:  # noqa: BLE001 - reported per file, the rest still runs
                summary.failed[path.name] = f"unreadable: {type(err).__name__}: {err}"
                progress.advance(task)
                continue
            tensor = _to_tensor(rgb)
            if pending and (tensor.shape != pending[0][1].shape or len(pending) >= cfg.batch_size):
                flush()
            pending.append((path, tensor, alpha))
            progress.advance(task)
        flush()
    return notes


def _iter_video(path: Path) -> Iterator[np.ndarray]:
    import imageio.v3 as iio

    yield from iio.imiter(path, plugin="pyav")


def _run_video(cfg: FixCommandConfig, fixer: Any, refs: list, summary: FixSummary) -> list[str]:
    import imageio.v3 as iio

    target = cfg.output / cfg.input.name
    if target.exists() and not cfg.overwrite:
        raise FileExistsError(f"{target} exists (use --overwrite)")
    meta = iio.immeta(cfg.input, plugin="pyav")
    fps = float(meta.get("fps") or 30.0)
    total = int(round(fps * float(meta["duration"]))) if meta.get("duration") else None
    ref = [refs[0][1]] if refs else None
    if refs:
        summary.reference_of = {cfg.input.name: refs[0][0]}
    frames: list[torch.Tensor] = []
    count = 0
    with iio.imopen(target, "w", plugin="pyav") as writer, _progress(cfg) as progress:
        writer.init_video_stream("libx264", fps=fps)
        task = progress.add_task(str(cfg.input), total=total)

        def flush() -> None:
            if frames:
                out = _fix_batch(fixer, frames, None if ref is None else ref * len(frames))
                for frame in out.permute(0, 2, 3, 1).cpu().numpy():
                    writer.write_frame(np.clip(np.round(frame * 255.0), 0, 255).astype(np.uint8))
                frames.clear()

        for frame in _iter_video(cfg.input):
            frames.append(_to_tensor(frame[..., :3].astype(np.float32) / 255.0))
            count += 1
            if len(frames) >= cfg.batch_size:
                flush()
            progress.advance(task)
        flush()
    if count == 0:
        target.unlink(missing_ok=True)
        raise ValueError(f"video {cfg.input} has no frames")
    summary.written.append(cfg.input.name)
    return [f"video: {count} frames at {fps:g} fps" + (", fixed reference" if refs else "")]


def _print_summary(cfg: FixCommandConfig, summary: FixSummary, notes: list[str]) -> None:
    if cfg.quiet:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"wrote {len(summary.written)} file(s) to {cfg.output}")
    if summary.failed:
        table = Table(title=f"{len(summary.failed)} input(s) failed")
        table.add_column("file")
        table.add_column("reason")
        for name, reason in summary.failed.items():
            table.add_row(name, reason)
        console.print(table)


def run(cfg: FixCommandConfig) -> FixSummary:
    """Run `difix-ns fix` as configured; see `fix_command.py`."""
    _check_paths(cfg)
    config = FixerConfig(
        backend=cfg.backend,
        checkpoint=cfg.checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        compile=cfg.compile,
        chunk_size=cfg.batch_size,
    )
    config.check()  # settings first: nothing is loaded or written for a command that cannot work
    refs = _load_references(cfg)
    fixer = config.setup()
    cfg.output.mkdir(parents=True, exist_ok=True)
    summary = FixSummary()
    if cfg.input.is_dir():
        notes = _run_folder(cfg, fixer, refs, summary)
    else:
        notes = _run_video(cfg, fixer, refs, summary)
    _print_summary(cfg, summary, notes)
    return summary
