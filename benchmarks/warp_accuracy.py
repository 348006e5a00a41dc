"""How accurate are depth-warped references? (issue 16; not a test)

Two measurements, both in the co-visible pixels the warp marks valid:
1. exact geometry: each training view of a synthetic scene warped into the next one with the scene's exact
   z-depth (`difix-ns synth` writes `depths/`), PSNR against that view's photo: the ceiling of any warp at this
   resolution (resampling and the renderer's shading, not geometry, limit it);
2. reconstructed geometry: the self fixer's curated pairs (a benchmark's `runs/<scene>/self_fixer/pairs`): PSNR of
   the held-out render, of the nearest warped training photo, and of pasting the warped photos over the render
   where valid (nearest valid first, or the mean of the valid ones) against the real photo.

    .venv/bin/python benchmarks/warp_accuracy.py --scenes benchmarks/results/sparse_synthetic/scenes/synth0 \
        --pairs benchmarks/results/sparse_synthetic/runs/synth0/self_fixer/pairs \
        benchmarks/results/real_fruit/runs/fruit/self_fixer/pairs

Writes results.json and results.md into --out (default benchmarks/results/warp_accuracy).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2) + 1e-12))


def exact_geometry(scene: Path) -> Dict[str, float]:
    """Mean PSNR and coverage of warping training view i into view i+1 with exact depth."""
    from difix_ns.data.scene_io import frame_cameras, read_transforms
    from difix_ns.geometry.warp import warp_references

    meta = read_transforms(scene)
    cameras = frame_cameras(meta)
    names = [Path(n).name for n in meta["train_filenames"]]

    def view(name: str):
        camera = cameras[name]
        image = torch.from_numpy(_rgb(scene / "images" / name)).permute(2, 0, 1)
        depth = torch.from_numpy(np.load(scene / "depths" / f"{Path(name).stem}.npy")).float()
        return image, depth, torch.from_numpy(camera.c2w[:3]).float(), torch.from_numpy(camera.K).float()

    scores, coverage = [], []
    for target, reference in zip(names[1:], names[:-1]):
        ref_rgb, ref_depth, ref_c2w, ref_k = view(reference)
        photo, depth, c2w, k = view(target)
        rgb, valid, _ = warp_references(ref_rgb[None], ref_depth[None], ref_c2w[None], ref_k[None], depth, c2w, k)
        mask = valid[0, 0].numpy()
        warped, truth = rgb[0].permute(1, 2, 0).numpy(), photo.permute(1, 2, 0).numpy()
        scores.append(_psnr(warped[mask], truth[mask]))
        coverage.append(float(mask.mean()))
    return {"pairs": len(scores), "psnr_warped_valid": float(np.mean(scores)), "coverage": float(np.mean(coverage))}


def reconstructed_geometry(pairs: Path) -> Dict[str, Dict[str, float]]:
    """Per curation strategy: PSNR of render, nearest warped photo (valid pixels), and pasting (whole image)."""
    rows: Dict[str, List[List[float]]] = defaultdict(list)
    for line in (pairs / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        degraded, clean = _rgb(pairs / record["degraded"]), _rgb(pairs / record["clean"])
        warped = [_rgb(pairs / p) for p in record["warped"]]
        masks = [np.asarray(Image.open(pairs / p), dtype=np.float32)[..., None] / 255 for p in record["warped_mask"]]
        first = masks[0][..., 0] > 0.5
        if first.sum() < 10:
            continue
        nearest = degraded
        for image, mask in zip(reversed(warped), reversed(masks)):
            nearest = np.where(mask > 0.5, image, nearest)
        weight = sum(masks)
        mean = np.where(weight > 0, sum(w * m for w, m in zip(warped, masks)) / np.maximum(weight, 1), degraded)
        rows[record["strategy"]].append([
            _psnr(degraded[first], clean[first]), _psnr(warped[0][first], clean[first]),
            _psnr(degraded, clean), _psnr(nearest, clean), _psnr(mean, clean), float(first.mean()),
        ])  # fmt: skip
    keys = ("render_valid", "warped_valid", "render", "paste_nearest", "paste_mean", "coverage")
    return {s: {"pairs": len(v), **dict(zip(keys, np.mean(v, axis=0).tolist()))} for s, v in rows.items()}


def _report(results: dict) -> str:
    lines = ["# Accuracy of depth-warped references", "", "Written by `benchmarks/warp_accuracy.py`. PSNR in dB.", ""]
    lines += ["## Exact depth (synthetic scenes): training view i warped into view i+1, valid pixels", ""]
    lines += ["| scene | pairs | coverage | PSNR warped |", "|---|---|---|---|"]
    for scene, r in results["exact"].items():
        lines.append(f"| {scene} | {r['pairs']} | {r['coverage']:.2f} | {r['psnr_warped_valid']:.2f} |")
    lines += ["", "## Reconstructed depth: the self fixer's curated pairs", ""]
    lines += [
        "| pairs folder | strategy | n | coverage | render (valid px) | warped (valid px) | render | paste nearest | "
        "paste mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for folder, by in results["reconstructed"].items():
        for s, r in by.items():
            lines.append(
                f"| {folder} | {s} | {r['pairs']} | {r['coverage']:.2f} | {r['render_valid']:.2f} | "
                f"{r['warped_valid']:.2f} | {r['render']:.2f} | {r['paste_nearest']:.2f} | {r['paste_mean']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="*", type=Path, default=[])
    parser.add_argument("--pairs", nargs="*", type=Path, default=[])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warp_accuracy"))
    args = parser.parse_args()
    results = {
        "exact": {s.name: exact_geometry(s) for s in args.scenes},
        "reconstructed": {str(p): reconstructed_geometry(p) for p in args.pairs},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(_report(results))
    print(_report(results))


if __name__ == "__main__":
    main()
