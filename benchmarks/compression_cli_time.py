"""Wall time of the `difix-ns compress` and `difix-ns decompress` command lines (fresh processes, as a user runs
them) on one run, next to the time a bare `python -c "import torch"` takes on the same machine in the same run.

    .venv/bin/python benchmarks/compression_cli_time.py --load-config RUN/config.yml --budget 80KB --repeats 3
    .venv/bin/python benchmarks/compression_cli_time.py --load-config RUN/config.yml --budget 80KB \
        --compress-args "--finetune-steps 600"

Prints one table (median of the repeats) and writes it as JSON to --out when given.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def _timed_output(command, cwd: Path, env: Optional[Dict[str, str]] = None) -> Tuple[float, str]:
    """(wall seconds, stdout) of `command` as a fresh process (`env`: its whole environment, default ours); raises
    with its stderr when it fails."""
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def _timed(command, cwd: Path, env: Optional[Dict[str, str]] = None) -> float:
    return _timed_output(command, cwd, env)[0]


def write_report(out: Path, lines: List[str], rows: list) -> None:
    """A compression benchmark's report.md (`lines`) and results.json (the command and `rows`) in `out`, printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="a splatfacto / difix-splatfacto run")
    parser.add_argument("--budget", default="80KB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compress-args", default="", help="more `difix-ns compress` options, one string (e.g. "
                        "'--finetune-steps 600')")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("difix-ns"))
    times = {"python -c 'import torch'": [], "difix-ns compress": [], "difix-ns decompress": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):
            times["python -c 'import torch'"].append(_timed([sys.executable, "-c", "import torch"], work))
            times["difix-ns compress"].append(_timed(
                [cli, "compress", "--load-config", str(args.load_config.resolve()), "--budget", args.budget,
                 "--out", str(work / "scene.dxs"), *shlex.split(args.compress_args)], work))  # fmt: skip
            times["difix-ns decompress"].append(_timed([cli, "decompress", str(work / "scene.dxs"), "--out",
                                                        str(work / "run")], work))  # fmt: skip
        size = (work / "scene.dxs").stat().st_size
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.load_config} at {args.budget} {args.compress_args} ({size} bytes), "
        f"median of {args.repeats} fresh processes:"
    )
    for name, seconds in medians.items():
        print(f"  {name:28s} {seconds:6.1f} s   (all: {', '.join(f'{s:.1f}' for s in times[name])})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python benchmarks/compression_cli_time.py " + shlex.join(sys.argv[1:]),
            "bytes": size, "seconds": times, "median": medians,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
