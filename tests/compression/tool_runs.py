"""Run an installed command-line tool (ns-train, ns-eval, ...) of this environment as a user does, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run_tool(args, cwd: Path) -> subprocess.CompletedProcess:
    """`args[0]` from the environment's bin folder with `args[1:]`, in `cwd`; fails the test with its output."""
    env = {**os.environ, "TORCH_HOME": str(cwd / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=cwd)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result
