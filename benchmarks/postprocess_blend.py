"""Post-processing blended by pose distance, against post-processing as is, on a finished benchmark (not a test).

For every kept difix-splatfacto run of a `difix-ns benchmark` folder, the run is loaded (its latest checkpoint, its
own fixer) and every evaluation view is post-processed twice: as the benchmark did (`postprocess_blend none`) and
blended with the raw render by the camera's distance to the nearest training view (`postprocess_blend distance`,
see `difix_ns.models.fixing`). Prints, per distance bin and mean over scenes, the PSNR / masked PSNR gain of each
over the raw render. The blend rule is fixed beforehand (nothing is tuned on evaluation views).

    .venv/bin/python benchmarks/postprocess_blend.py benchmarks/results/sparse_synthetic benchmarks/results/real_fruit

Writes results.json and results.md into --out (default benchmarks/results/postprocess_blend).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

_MODES = ("none", "distance")


def _views(config_path: Path, mode: str) -> List[Dict[str, float]]:
    from nerfstudio.utils.eval_utils import eval_setup

    import torch

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    pipeline.eval()
    model = pipeline.model
    model.config.postprocess_blend = mode
    names = pipeline.datamanager.eval_dataset.image_filenames
    rows = []
    with torch.no_grad():
        for camera, batch in pipeline.datamanager.fixed_indices_eval_dataloader:
            outputs = model.get_outputs_for_camera(camera, postprocess=True)
            metrics, _ = model.get_image_metrics_and_images(outputs, batch)
            rows.append(
                {"filename": Path(names[int(batch["image_idx"])]).name, **{k: float(v) for k, v in metrics.items()}}
            )
    return rows


def _scene_gains(bench: Path, scene: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    split = json.loads((bench / "splits" / scene / "split.json").read_text())
    bins = {Path(e["file_path"]).name: e["bin"] for e in split["eval"]}
    config = json.loads((bench / "runs" / scene / "difix-splatfacto" / "result.json").read_text())["config"]
    gains: Dict[str, Dict[str, Dict[str, List[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for mode in _MODES:
        for row in _views(Path(config), mode):
            for metric in ("psnr", "mpsnr"):
                if f"{metric}_fixed" in row:
                    delta = row[f"{metric}_fixed"] - row[metric]
                    for b in (bins[row["filename"]], "all"):
                        gains[mode][b][metric].append(delta)
    return {m: {b: {k: float(np.mean(v)) for k, v in d.items()} for b, d in by.items()} for m, by in gains.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/postprocess_blend"))
    args = parser.parse_args()
    results = {}
    for bench in args.benchmarks:
        for scene_dir in sorted((bench / "runs").iterdir()):
            if (scene_dir / "difix-splatfacto" / "result.json").is_file():
                results[f"{bench.name}/{scene_dir.name}"] = _scene_gains(bench, scene_dir.name)
    lines = ["# Post-processing as is vs blended by pose distance", "",
             "Gain of the post-processed render over the raw difix-splatfacto render (dB), per distance bin. "
             "Written by `benchmarks/postprocess_blend.py`.", "",
             "| scene | blend | "
             + " | ".join(f"Δ{m} {b}" for b in ("near", "mid", "far", "all") for m in ("psnr", "mpsnr")) + " |",
             "|---|---|" + "---|" * 8]  # fmt: skip
    for scene, by_mode in results.items():
        for mode in _MODES:
            cells = []
            for b in ("near", "mid", "far", "all"):
                for m in ("psnr", "mpsnr"):
                    value = by_mode.get(mode, {}).get(b, {}).get(m)
                    cells.append("-" if value is None else f"{value:+.2f}")
            lines.append(f"| {scene} | {mode} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
