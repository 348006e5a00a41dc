"""How good are the `self` back-end's SR targets? Scores them against the HR photos of the training views.

sr3d-splatfacto never sees the HR training photos; the benchmark's scenes have them. For a finished sr3d run of
`benchmarks/superres.py` (`--run`: its folder holding config.yml and sr3d/round-*/renders), this script takes each
round's saved HR renders of the training views and the run's trained `self` network, and scores what each target
recipe would give at that round: PSNR against the HR photo, mean over the training views, after the colour fix.
  bicubic:    the bicubic-upsampled LR view (the (ii) baseline's targets);
  per-frame:  the network's x2 stages from the LR view (render_weight 0);
  render:     the render at the last stage's input size, then that stage (render_weight 1, the earlier default);
  w=0.5:      their mean (render_weight 0.5);
  rendered:   the render itself.
LR views are made as the method makes them (antialiased bicubic downsample of the HR photo by the factor).
Writes results.json and results.md under --out.

    .venv/bin/python benchmarks/superres_targets.py --run <sr3d run folder> --images <HR images folder> --out OUT
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

RECIPES = ("bicubic", "per-frame", "render", "w=0.5", "rendered")


def _load(path: Path) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1], read as `difix-ns fix` reads images."""
    from difix_ns.fix_runner import read_image

    return torch.from_numpy(read_image(path)[0]).permute(2, 0, 1)[None]


def _photo(images: Path, stem: str) -> Path:
    found = sorted(p for p in images.glob(stem + ".*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not found:
        raise ValueError(f"no HR photo named {stem}.* in {images}")
    return found[0]


@torch.no_grad()
def score_rounds(run: Path, images: Path, factor: int) -> Dict[str, Dict[str, float]]:
    """{round name: {recipe: mean PSNR (dB) against the HR photos}} for every saved round of the run."""
    from rich.progress import track

    from difix_ns.metrics import psnr
    from difix_ns.superres.config import SelfSuperResConfig
    from difix_ns.superres.ops import color_fix, downsample, lr_size, upsample
    from difix_ns.superres.self_sr import SelfBackend

    rounds = sorted((run / "sr3d").glob("round-*"))
    if not rounds:
        raise ValueError(f"{run} has no sr3d/round-* folders (not a finished sr3d-splatfacto run)")
    backend = SelfBackend(SelfSuperResConfig(render_weight=1.0))
    backend.load(run / "sr3d" / "backend" / "train" / "fixer")
    stems = sorted(p.stem for p in (rounds[0] / "renders").glob("*.png"))
    photos = {stem: _load(_photo(images, stem)) for stem in stems}
    lrs = {s: downsample(hr, lr_size(hr.shape[-2], hr.shape[-1], factor)) for s, hr in photos.items()}
    fixed = {s: {} for s in stems}  # round-independent targets
    for s in track(stems, description="per-frame targets"):
        size = tuple(photos[s].shape[-2:])
        fixed[s]["bicubic"] = color_fix(upsample(lrs[s], size), lrs[s])
        fixed[s]["per-frame"] = color_fix(backend.upscale(lrs[s], None, size), lrs[s])
    results = {}
    for folder in rounds:
        scores: Dict[str, List[float]] = {name: [] for name in RECIPES}
        for s in track(stems, description=f"{folder.name} targets"):
            hr, lr = photos[s], lrs[s]
            rendered = _load(folder / "renders" / f"{s}.png")
            if rendered.shape != hr.shape:
                raise ValueError(
                    f"{folder / 'renders' / s}.png is {tuple(rendered.shape)}, its photo {tuple(hr.shape)}"
                )
            render_path = color_fix(backend.upscale(lr, rendered, tuple(hr.shape[-2:])), lr)
            targets = {
                **fixed[s],
                "render": render_path,
                "w=0.5": 0.5 * render_path + 0.5 * fixed[s]["per-frame"],
                "rendered": rendered,
            }
            for name in RECIPES:
                scores[name].append(psnr(targets[name].clamp(0, 1), hr))
        results[folder.name] = {name: float(np.mean(values)) for name, values in scores.items()}
    return results


def write_report(results: Dict[str, Dict[str, float]], args: argparse.Namespace, command: str) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "run": str(args.run), "rounds": results}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    lines = [
        "# `self` back-end SR targets against the HR training photos (benchmarks/superres_targets.py)",
        "",
        f"Command: `{command}`.",
        "",
        f"Run: `{args.run}`. Mean PSNR (dB) over its training views, after the colour fix; `rendered` is the "
        "round's render itself. A target recipe higher here gives the 3DGS better supervision at HR.",
        "",
        "| round | " + " | ".join(RECIPES) + " |",
        "|---|" + "---|" * len(RECIPES),
    ]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[r]:.2f}" for r in RECIPES) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="sr3d-splatfacto run folder (config.yml, sr3d/)")
    parser.add_argument("--images", type=Path, required=True, help="folder of the HR photos of its training views")
    parser.add_argument("--factor", type=int, default=4, help="the run's SR factor")
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.json, results.md)")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/superres_targets.py", *sys.argv[1:]])
    write_report(score_rounds(args.run, args.images, args.factor), args, command)


if __name__ == "__main__":
    main()
