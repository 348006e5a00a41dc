"""Which learning rates the compress fine-tune should use: held-out PSNR of the decoded file per rate scale (not a
test).

For each run, the budget is its uncompressed PLY bytes / --ratio; for each variant `MEANS:OTHERS` (scales of
splatfacto's initial learning rates, `finetune.LR_SCALE`; `final:1` = the means at splatfacto's end-of-schedule
rate, 100x lower, the others x1; an optional third field DECAY: the fraction of the rates at the last step,
`finetune.LR_FINAL_FRACTION`, 1 = constant rates), `compress_scene(..., finetune_steps=--steps)` writes the file
in-process, and the decoded Gaussians are rendered at the run's evaluation cameras against its photos.

    .venv/bin/python benchmarks/compression_finetune_lr.py --load-config RUN/config.yml [...] --ratio 100 \
        --steps 200 --variants final:1:1 1:2:1 1:2 --out benchmarks/results/compression_finetune_lr

Writes report.md and results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression_cli_time import write_report  # noqa: E402


def _variant(text: str):
    """MEANS:OTHERS[:DECAY] -> (means scale or "final", others scale, final fraction of the rates or None)."""
    means, others, *decay = text.split(":")
    return (means if means == "final" else float(means)), float(others), (float(decay[0]) if decay else None)


def _rates(means, others: float):
    """`finetune._learning_rates` at these scales (means "final": splatfacto's end-of-schedule rate)."""
    from difix_ns.method_configs.difix_splatfacto import splatfacto_optimizers

    groups = splatfacto_optimizers()
    rates = {name: group["optimizer"].lr * others for name, group in groups.items()}
    means_group = groups["means"]
    rates["means"] = means_group["scheduler"].lr_final if means == "final" else means_group["optimizer"].lr * means
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-config", type=Path, nargs="+", required=True, help="splatfacto / difix-splatfacto runs")
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=["final:1:1", "1:2"], help="MEANS:OTHERS[:DECAY] rates")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression_finetune_lr"))
    args = parser.parse_args()

    import difix_ns.compression.finetune as finetune
    from difix_ns.compression.command import compress_scene, read_scene, uncompressed_ply_bytes
    from difix_ns.compression.restoration import decoded_file, render_scene
    from difix_ns.metrics import psnr

    rows, default_decay = [], finetune.LR_FINAL_FRACTION
    for config in args.load_config:
        scene = read_scene(config)
        name = config.parent.parent.parent.name if config.parent.name == "run" else config.parent.name
        evaluation = scene.pipeline.datamanager.eval_dataset
        photos = [evaluation.get_image_float32(i)[..., :3].numpy() for i in range(len(evaluation))]

        def held_out(params) -> float:
            renders = render_scene(scene.pipeline.model, params, evaluation.cameras)
            return float(np.mean([psnr(a, b) for a, b in zip(renders, photos)]))

        degree = int(scene.config.pipeline.model.sh_degree)
        budget = int(uncompressed_ply_bytes(scene.params["means"].shape[0], degree) / args.ratio)
        uncompressed = held_out(None)
        for text in args.variants:
            means, others, decay = _variant(text)
            rates = _rates(means, others)
            finetune._learning_rates = lambda rates=rates: rates
            finetune.LR_FINAL_FRACTION = default_decay if decay is None else decay
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                summary = compress_scene(scene, Path(folder) / "f.dxs", budget_bytes=budget, finetune_steps=args.steps)
                decoded = decoded_file(Path(folder) / "f.dxs")["params"]
                rows.append({"scene": name, "variant": text, "budget": budget, "uncompressed": uncompressed,
                             "psnr": held_out(decoded), "num_gaussians": summary["num_gaussians"],
                             "bits": ",".join(str(b) for b in summary["bits"].values()),
                             "seconds": time.perf_counter() - start})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"# compress fine-tune learning rates ({args.ratio:g}x, {args.steps} steps)",
        "",
        f"`benchmarks/compression_finetune_lr.py {shlex.join(sys.argv[1:])}`: held-out PSNR of the decoded file "
        "(in-process `compress_scene`, then renders at the run's evaluation cameras against its photos). Variant "
        "MEANS:OTHERS[:DECAY] = scales of splatfacto's initial learning rates (`final`: the means at splatfacto's "
        "end-of-schedule rate) and the fraction of them left at the last step (default: `finetune.LR_FINAL_FRACTION`"
        f" = {default_decay:g}; 1: constant).",
        "",
        "| scene | variant | uncompressed PSNR | decoded PSNR | loss (dB) | kept | bits |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['scene']} | `{r['variant']}` | {r['uncompressed']:.2f} | {r['psnr']:.2f} | "
              f"{r['uncompressed'] - r['psnr']:.2f} | {r['num_gaussians']} | {r['bits']} |" for r in rows]  # fmt: skip
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
