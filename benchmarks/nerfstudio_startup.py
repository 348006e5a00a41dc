"""Start-up time of nerfstudio commands with the plugin's one-frame external-method check
(`difix_ns.nerfstudio_startup`) against nerfstudio's own `inspect.stack()` check (DIFIX_NS_FAST_EXTERNAL_METHODS=0),
in fresh processes that alternate between the two, side by side in one run.

    .venv/bin/python benchmarks/nerfstudio_startup.py --repeats 5 --out benchmarks/results/nerfstudio_startup
    .venv/bin/python benchmarks/nerfstudio_startup.py --load-config RUN/config.yml --budget 17KB   # + compress

Prints the medians and their ratio; writes report.md and results.json to --out when given.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression_cli_time import _timed, write_report  # noqa: E402  (one timer and report writer)

from difix_ns.nerfstudio_startup import ENV_SWITCH  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-config", type=Path, default=None, help="also time `difix-ns compress` on this run")
    parser.add_argument("--budget", default="17KB")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    commands = {
        "ns-train difix-splatfacto --help": [bin_dir / "ns-train", "difix-splatfacto", "--help"],
        "ns-eval --help": [bin_dir / "ns-eval", "--help"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.load_config is not None:
            commands[f"difix-ns compress --budget {args.budget}"] = [
                bin_dir / "difix-ns", "compress", "--load-config", args.load_config.resolve(), "--budget", args.budget,
                "--out", Path(tmp) / "scene.dxs"]  # fmt: skip
        seconds = {name: {"fast": [], "nerfstudio": []} for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                for variant, switch in (("fast", "1"), ("nerfstudio", "0")):
                    seconds[name][variant].append(_timed(command, Path(tmp), {**os.environ, ENV_SWITCH: switch}))
    lines = [
        "# nerfstudio start-up: the plugin's one-frame external-method check against nerfstudio's inspect.stack()",
        "",
        f"Command: `python benchmarks/nerfstudio_startup.py {shlex.join(sys.argv[1:])}`. Fresh processes, the two "
        f"variants alternating, median of {args.repeats}.",
        "",
        "| command | fast check (s) | nerfstudio's check (s) | ratio fast / nerfstudio | saved (s) |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for name, times in seconds.items():
        fast, slow = statistics.median(times["fast"]), statistics.median(times["nerfstudio"])
        lines.append(f"| `{name}` | {fast:.2f} | {slow:.2f} | {fast / slow:.2f} | {slow - fast:.2f} |")
        rows.append({"command": name, "seconds": times, "median_fast": fast, "median_nerfstudio": slow})
    if args.out is not None:
        write_report(args.out, lines, rows)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
