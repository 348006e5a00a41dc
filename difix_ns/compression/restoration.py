"""Training pairs for an artifact-aware restorer of compressed scenes (NiFi's setting, issue 13).

A pair is (render of the scene after `difix-ns compress` + decode at some budget, render of the uncompressed
scene) from the same camera. The uncompressed scene is the target, so no photo is needed and cameras are free:
the training cameras and novel cameras between neighbouring training cameras (the kind of view a held-out or
viewer camera is). The compressed scenes go through exactly the bytes `difix-ns compress` writes (one codec in the
project). Pairs are written in the curation format (`manifest.jsonl`), so `difix-ns train-fixer` trains the
restorer; the restorer has no reference view (the record's reference is its own degraded render).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, List, Literal, Mapping, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Float

__all__ = [
    "between_cameras",
    "decoded_at_budget",
    "decoded_file",
    "render_scene",
    "restorer_manifests",
    "write_manifest",
    "write_file_pairs",
    "write_restoration_pairs",
]


def between_cameras(cameras, per_view: int, seed: int = 0, neighbours: int = 3):
    """`per_view` novel cameras per training camera of `cameras` (nerfstudio Cameras [C]): each on the way from it
    to one of its `neighbours` nearest cameras (random fraction in [0.2, 0.8]; position lerp, rotation slerp by
    nerfstudio's quaternion helpers), with the intrinsics of the first. Empty (None) for per_view = 0."""
    from nerfstudio.cameras.camera_utils import quaternion_from_matrix, quaternion_matrix, quaternion_slerp
    from nerfstudio.cameras.cameras import Cameras

    if per_view < 0:
        raise ValueError(f"novel views per training view must be >= 0, got {per_view}")
    count = cameras.shape[0]
    if per_view == 0 or count < 2:
        return None
    c2w = cameras.camera_to_worlds.detach().cpu().double().numpy()
    centers = c2w[:, :3, 3]
    gaps = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    rng = np.random.default_rng(seed)
    poses, sources = [], []
    for i in range(count):
        near = np.argsort(gaps[i])[: min(neighbours, count - 1)]
        for _ in range(per_view):
            j, t = int(rng.choice(near)), float(rng.uniform(0.2, 0.8))
            start, end = (quaternion_from_matrix(c2w[k, :3, :3]) for k in (i, j))
            rotation = quaternion_matrix(quaternion_slerp(start, end, t))[:3, :3]
            pose = np.concatenate([rotation, ((1 - t) * centers[i] + t * centers[j])[:, None]], 1)
            poses.append(pose)
            sources.append(i)
    index = torch.tensor(sources)
    return Cameras(
        camera_to_worlds=torch.from_numpy(np.stack(poses)).float(),
        fx=cameras.fx[index], fy=cameras.fy[index], cx=cameras.cx[index], cy=cameras.cy[index],
        width=cameras.width[index], height=cameras.height[index], camera_type=cameras.camera_type[index],
    )  # fmt: skip


@torch.no_grad()
def render_scene(model, params: Optional[Dict[str, np.ndarray]], cameras) -> List[Float[np.ndarray, "H W 3"]]:
    """RGB renders in [0, 1] of a splat model at each camera, with its Gaussians replaced by `params` (numpy, keys
    of `gauss_params`; None: the model's own). The model's Gaussians are restored afterwards."""
    original = {k: v for k, v in model.gauss_params.items()}
    model.eval()
    try:
        if params is not None:
            for key, value in params.items():
                model.gauss_params[key] = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(value)).to(
                    original[key].device, original[key].dtype))  # fmt: skip
        # splatfacto's own render (get_outputs), not a fixing model's post-processed one
        return [model.get_outputs(cameras[i : i + 1].to(model.device))["rgb"].clamp(0, 1).cpu().numpy()
                for i in range(cameras.shape[0])]  # fmt: skip
    finally:
        for key, value in original.items():
            model.gauss_params[key] = value


def decoded_file(path: Path) -> Dict[str, object]:
    """The Gaussians a decoder gets from a compressed file: {"params", "bytes", "num_gaussians"}."""
    from difix_ns.compression.codec import dequantize
    from difix_ns.compression.container import unpack

    data = Path(path).read_bytes()
    params = dequantize(unpack(data, str(path))[0])
    return {"params": params, "bytes": len(data), "num_gaussians": int(params["means"].shape[0])}


def decoded_at_budget(scene, budget_bytes: int) -> Dict[str, object]:
    """The scene as a decoder gets it from `difix-ns compress --budget budget_bytes` (the same file, decoded):
    {"params", "bytes", "num_gaussians"}."""
    from difix_ns.compression.command import compress_scene

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.dxs"
        compress_scene(scene, path, budget_bytes=budget_bytes)
        return decoded_file(path)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255.0 + 0.5).astype(np.uint8)).save(path)


def write_restoration_pairs(
    scene, out: Path, ratios: Sequence[float], novel_per_view: int = 2, unit: str = "compression", seed: int = 0,
    source_scene: Optional[str] = None, progress=None, clean_pairs: bool = True,
    compressed: Optional[Mapping[float, Path]] = None,
) -> List[dict]:  # fmt: skip
    """Pairs (compressed render, uncompressed render) of a read splat run (`command.read_scene`) at budgets of the
    float32 PLY size / each ratio, at its training cameras and `novel_per_view` novel cameras per training camera;
    with `clean_pairs`, also (uncompressed render, itself) at the same cameras (`ratio` 1.0): a restorer then
    learns to leave a render without artifacts alone (a lightly compressed scene, or a scene it never saw).
    `compressed`: files already written by `compress_scene` at some of the ratios (ratio -> file), decoded
    instead of compressed again (the encoding is deterministic, so the pairs are the same).

    Writes `out/pairs/<unit>/ratio-<r>/*_{degraded,clean}.png` and returns curation records (paths relative to
    `out`; `strategy` "compression", `camera` "train" or "novel", `ratio`, `bytes`, `num_gaussians`)."""
    from difix_ns.compression.command import uncompressed_ply_bytes
    from difix_ns.metrics import psnr

    if not ratios or min(ratios) <= 1:
        raise ValueError(f"compression ratios must be > 1, got {list(ratios)}")
    if scene.pipeline is None:
        raise ValueError("write_restoration_pairs needs a scene read with its pipeline (command.read_scene)")
    model, train = scene.pipeline.model, scene.pipeline.datamanager.train_dataset
    names = [Path(p).stem for p in train.image_filenames]
    novel = between_cameras(train.cameras, novel_per_view, seed)
    cameras = [("train", train.cameras, names)]
    if novel is not None:
        cameras.append(("novel", novel, [f"novel{k:04d}" for k in range(novel.shape[0])]))
    clean = {kind: render_scene(model, None, cams) for kind, cams, _ in cameras}
    ply = uncompressed_ply_bytes(scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree))
    task = progress.add_task("Compressed renders", total=len(ratios) + int(clean_pairs)) if progress else None
    records = []
    levels = ([1.0] if clean_pairs else []) + sorted(ratios)
    for ratio in levels:
        if ratio <= 1:
            decoded = {"params": None, "bytes": ply, "num_gaussians": len(scene.importance)}
        elif compressed and ratio in compressed:
            decoded = decoded_file(compressed[ratio])
        else:
            decoded = decoded_at_budget(scene, int(ply / ratio))
        folder = Path(out) / "pairs" / unit / f"ratio-{ratio:g}"
        for kind, cams, stems in cameras:
            renders = render_scene(model, decoded["params"], cams) if ratio > 1 else clean[kind]
            for stem, degraded, target in zip(stems, renders, clean[kind]):
                paths = {k: folder / f"{stem}_{k}.png" for k in ("degraded", "clean")}
                _save_png(target, paths["clean"])
                if ratio == 1.0:  # a clean pair: the input is the target's own file
                    paths["degraded"] = paths["clean"]
                else:
                    _save_png(degraded, paths["degraded"])
                rel = {k: str(p.relative_to(out)) for k, p in paths.items()}
                records.append({
                    "id": f"{unit}/{stem}@{ratio:g}x", **rel, "reference": rel["degraded"], "view": stem,
                    "camera": kind, "strategy": "compression", "unit": unit, "ratio": float(ratio),
                    "bytes": decoded["bytes"], "num_gaussians": decoded["num_gaussians"],
                    "source_scene": source_scene or str(scene.config_path), "step": scene.step,
                    "height": int(target.shape[0]), "width": int(target.shape[1]),
                    "psnr_degraded": psnr(degraded, target) if ratio > 1 else None,  # identical: infinite
                })  # fmt: skip
        if progress:
            progress.advance(task)
    return records


def write_file_pairs(scene, file: Path, out: Path, novel_per_view: int = 2, progress=None) -> Path:
    """Restoration pairs of one file `compress` wrote from `scene` (its decoded renders against the uncompressed
    ones, at the training cameras and `novel_per_view` novel cameras per training camera; no clean pairs): what a
    per-scene restorer of exactly that file trains on (`difix-ns train-fixer --manifests out/manifest.jsonl`).
    Returns the manifest."""
    from difix_ns.compression.command import uncompressed_ply_bytes

    file = Path(file)
    ratio = uncompressed_ply_bytes(scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree))
    ratio /= file.stat().st_size
    records = write_restoration_pairs(scene, out, [ratio], novel_per_view, unit=file.stem, progress=progress,
                                      clean_pairs=False, compressed={ratio: file})  # fmt: skip
    return write_manifest(records, out)


def write_manifest(records: List[dict], out: Path) -> Path:
    """`out/manifest.jsonl` of `records` (written to a temporary name, then renamed)."""
    path = Path(out) / "manifest.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
    return path


def restorer_manifests(
    manifests: Dict[str, Path], scene: str, mode: Literal["generic", "per-scene"]
) -> List[Path]:
    """The pair manifests a restorer of `scene` trains on: `generic`, every scene's but its own (NiFi's setting: the
    restorer never saw the scene it restores, and is not counted in its rate); `per-scene`, its own only."""
    if mode == "per-scene":
        return [manifests[scene]]
    if mode != "generic":
        raise ValueError(f"restorer mode must be 'generic' or 'per-scene', got {mode!r}")
    others = [path for name, path in manifests.items() if name != scene]
    if not others:
        raise ValueError(f"a generic restorer of {scene!r} needs pairs of another scene; there is no other scene")
    return others
