"""OpenMP wait policy on a 2-core machine: one NAFNet training loop beside another torch process (not a test).

`difix_ns/__init__.py` sets OMP_WAIT_POLICY=PASSIVE before torch loads, and `difix_ns.runner` sets it for the
ns-train subprocesses it starts. This script shows why: it runs the same NAFNet training steps (width 16, two warped
references, batch 4, 64 px crops) in fresh processes with the default (active, busy-waiting) policy and with the
passive one, each time beside a competing torch process (a 2-thread convolution loop standing for ns-train), and
prints the median step time of each side by side.

    .venv/bin/python benchmarks/omp_wait_policy.py [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

_STEPS = r"""
import sys, time, torch
from difix_ns.fixers.base import WarpedViews
from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer
torch.manual_seed(0)
fixer = NAFNetFixer(NAFNet(width=16, warped_references=2))
optimizer = torch.optim.AdamW(fixer.parameters(), 1e-3)
x = torch.rand(4, 3, 64, 64)
warped = WarpedViews(torch.rand(4, 2, 3, 64, 64), torch.ones(4, 2, 1, 64, 64))
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    loss = (fixer(x, None, warped) - x).pow(2).mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    print(time.perf_counter() - start, flush=True)
"""

_COMPETITOR = r"""
import torch
x = torch.rand(8, 16, 96, 96); w = torch.rand(16, 16, 3, 3)
while True:
    torch.nn.functional.conv2d(x, w, padding=1)
"""


def _median_step(policy: str, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    competitor = subprocess.Popen([sys.executable, "-c", _COMPETITOR], env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    try:
        time.sleep(3)  # let it start its threads
        # `-c` imports torch before difix_ns, so the package's own setting does not apply here
        code = "import torch\n" + _STEPS
        out = subprocess.run(
            [sys.executable, "-c", code, str(steps)], env=env, capture_output=True, text=True, check=True
        )
    finally:
        competitor.kill()
        competitor.wait()
    times = [float(line) for line in out.stdout.split()][1:]  # the first step warms up
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    active = _median_step("default", args.steps)
    passive = _median_step("PASSIVE", args.steps)
    print(f"NAFNet step beside a busy torch process, {os.cpu_count()} cores, median of {args.steps - 1} steps:")
    print(f"  OMP_WAIT_POLICY unset (active): {active:.3f} s")
    print(f"  OMP_WAIT_POLICY=PASSIVE:        {passive:.3f} s")
    print(f"  ratio active / passive:          {active / passive:.1f}x")


if __name__ == "__main__":
    main()
