"""How many fine-tune steps `difix-ns compress` can afford: time against loss at one budget (not a test).

For one scene of the compression benchmark (the same dataset and difix-splatfacto run as `compression_rd.py`,
trained into --work when missing) and a budget of PLY size / --ratio, each `--steps` value (and each `--seconds`
value, as `--finetune-seconds S`) runs the command lines a user runs, as fresh processes: `difix-ns compress
--budget B --finetune-steps N`, timed, then `difix-ns decompress`,
timed, and the decompressed run is scored on the held-out views. The loss is the uncompressed run's PSNR minus the
decompressed one's (issue 13: <= 1.0 dB at >= 100x, with compress <= 60 s on CPU).

    .venv/bin/python benchmarks/compression_finetune_steps.py --scene beer --ratio 100 --steps 250 300 600
    .venv/bin/python benchmarks/compression_finetune_steps.py --scene synth0 --steps --seconds 20

Writes report.md and results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compression_rd  # noqa: E402  (the benchmark's dataset and run, for the same scene)
from compression_cli_time import _timed, _timed_output  # noqa: E402  (one timer for the command-line benchmarks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="beer", help="synth<seed> or a capture under ../shared/data/real")
    parser.add_argument("--ratio", type=float, default=100.0, help="budget = uncompressed PLY bytes / ratio")
    parser.add_argument("--steps", type=int, nargs="*", default=[250, 300, 600])
    parser.add_argument("--seconds", type=float, nargs="*", default=[], help="--finetune-seconds values")
    parser.add_argument("--downscale", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("outputs/compression_finetune_steps"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression_finetune_steps"))
    args = parser.parse_args()

    from difix_ns.compression.command import read_scene, uncompressed_ply_bytes

    data = compression_rd._dataset(args.scene, args, args.work)
    config = compression_rd._train(args.scene, data, args, args.work)
    base, _ = compression_rd._evaluate(config)
    scene = read_scene(config)
    n, degree = scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree)
    ply = uncompressed_ply_bytes(n, degree)
    budget = int(ply / args.ratio)
    cli = Path(sys.executable).parent / "difix-ns"
    rows = []
    settings = [("--finetune-steps", s, f"{s}") for s in args.steps]
    settings += [("--finetune-seconds", s, f"{s:g}s") for s in args.seconds]
    for option, value, name in settings:
        file = args.work / "files" / f"{args.scene}_{args.ratio:g}x_ft{name}.dxs"
        decoded = args.work / "decoded" / f"{args.scene}_{args.ratio:g}x_ft{name}"
        compress, printed = _timed_output([cli, "compress", "--load-config", config, "--budget", budget, option, value,
                                           "--out", file], Path.cwd())  # fmt: skip
        steps = int(re.search(r"(\d+)\s+fine-tune\s+steps", printed).group(1))  # \s: rich wraps lines
        decompress = _timed([cli, "decompress", file, "--out", decoded], Path.cwd())
        metrics, _ = compression_rd._evaluate(next(decoded.rglob("config.yml")))
        rows.append({"setting": f"{option} {value}", "finetune_steps": steps, "compress_seconds": compress,
                     "decompress_seconds": decompress, "bytes": file.stat().st_size,
                     "ratio": ply / file.stat().st_size, "psnr": metrics["psnr"],
                     "loss": base["psnr"] - metrics["psnr"]})  # fmt: skip
        print(rows[-1], flush=True)

    lines = [
        f"# compress fine-tune steps: time against loss ({args.scene}, {args.ratio:g}x)",
        "",
        f"`benchmarks/compression_finetune_steps.py {shlex.join(sys.argv[1:])}`: fresh `difix-ns compress --budget "
        f"{budget} --finetune-steps N` (or `--finetune-seconds S`) and "
        f"`difix-ns decompress` processes, one each, on the compression benchmark's run of {args.scene} ({n} "
        f"Gaussians, {ply} PLY bytes, held-out PSNR {base['psnr']:.2f} dB uncompressed). Loss = uncompressed PSNR "
        "minus the decompressed file's (issue 13: <= 1.0 dB; compress <= 60 s, decompress <= 5 s).",
        "",
        "| setting | fine-tune steps | compress s | decompress s | bytes | ratio | PSNR | loss (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| `{r['setting']}` | {r['finetune_steps']} | {r['compress_seconds']:.1f} | "
              f"{r['decompress_seconds']:.1f} | {r['bytes']} | {r['ratio']:.0f}x | {r['psnr']:.2f} | {r['loss']:.2f} |"
              for r in rows]  # fmt: skip
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    summary = {"scene": args.scene, "ratio": args.ratio, "budget": budget, "uncompressed": base, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(report)


if __name__ == "__main__":
    main()
