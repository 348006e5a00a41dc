"""How many encodings `difix-ns compress` spends fitting a budget: the secant search against plain bisection,
side by side on the same Gaussians (not a test).

For each run and each budget (uncompressed PLY bytes / ratio), `budget.encode_best` (what `compress --budget` does:
every bit allocation of the ladder fitted to the budget and scored by its renders against the uncompressed scene)
runs once with each search, in alternating order. Prints the encodings tried, the seconds, their ratio, and what
each search kept (Gaussians, bits, bytes); both files are under the budget by construction.

    .venv/bin/python benchmarks/compression_search.py --load-config RUN/config.yml [RUN2/config.yml ...] \
        --ratios 50 100 200 800 --out benchmarks/results/compression_search

Writes report.md and results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from statistics import mean


sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression_cli_time import write_report  # noqa: E402


def _search(scene, budget: int, secant: bool, score) -> dict:
    from difix_ns.compression.budget import CodecOptions, encode_best
    from difix_ns.compression.config_text import pack_config

    dictionary, config_bytes = pack_config(scene.config_path.read_text())
    metadata = {"config_yml_deflated": config_bytes, "config_dictionary": dictionary, "step": scene.step}
    options = CodecOptions(sh_degree=scene.active_sh_degree)
    tries = []  # every encoding of the ladder walk
    start = time.perf_counter()
    result = encode_best(scene.params, scene.importance, budget, options, metadata, score,
                         on_try=lambda count, size: tries.append((count, size)), secant=secant)  # fmt: skip
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "all_tries": len(tries), "allocations": len(result.scores), "bytes": len(result.data),
            "num_gaussians": result.num_gaussians, "bits": ",".join(str(b) for b in result.bits.values())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-config", type=Path, nargs="+", required=True, help="splatfacto / difix-splatfacto runs")
    parser.add_argument("--ratios", type=float, nargs="+", default=[50.0, 100.0, 200.0, 800.0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression_search"))
    args = parser.parse_args()

    from difix_ns.compression.command import _calibration_cameras, _fidelity, read_scene, uncompressed_ply_bytes

    rows = []
    for config in args.load_config:
        scene = read_scene(config)
        score, _ = _fidelity(scene, _calibration_cameras(scene))
        name = config.parent.parent.parent.name if config.parent.name == "run" else config.parent.name
        ply = uncompressed_ply_bytes(scene.params["means"].shape[0], int(scene.config.pipeline.model.sh_degree))
        for index, ratio in enumerate(args.ratios):
            budget = int(ply / ratio)
            order = (False, True) if index % 2 == 0 else (True, False)  # alternate: drift hits both alike
            runs = {secant: _search(scene, budget, secant, score) for secant in order}
            row = {"scene": name, "ratio": ratio, "budget": budget, "bisection": runs[False], "secant": runs[True]}
            row["time_ratio"] = runs[True]["seconds"] / runs[False]["seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)

    lines = [
        "# Fitting a byte budget: secant search against bisection",
        "",
        f"`benchmarks/compression_search.py {shlex.join(sys.argv[1:])}`: `budget.encode_best` (every bit allocation of "
        "the ladder fitted to the budget, scored by renders against the uncompressed scene) on the same Gaussians "
        "with each search, alternating which runs first. Encodings = all tries over the ladder walk.",
        "",
        "| scene | ratio | budget B | encodings bisection / secant | seconds bisection / secant | time ratio "
        "| kept bisection / secant | bits bisection / secant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, s = r["bisection"], r["secant"]
        lines.append(f"| {r['scene']} | {r['ratio']:g}x | {r['budget']} | {b['all_tries']} / {s['all_tries']} | "
                     f"{b['seconds']:.1f} / {s['seconds']:.1f} | {r['time_ratio']:.2f} | {b['num_gaussians']} / "
                     f"{s['num_gaussians']} | {b['bits']} / {s['bits']} |")  # fmt: skip
    encodings = {search: mean(r[search]["all_tries"] for r in rows) for search in ("bisection", "secant")}
    lines += ["", f"Mean time ratio (secant / bisection): {mean(r['time_ratio'] for r in rows):.2f}; mean encodings "
              f"{encodings['bisection']:.1f} -> {encodings['secant']:.1f}."]  # fmt: skip
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
