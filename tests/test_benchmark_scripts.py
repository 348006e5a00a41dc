"""The scripts under benchmarks/ are not imported by the package, so a refactor can break them silently: every
`difix_ns` name they import (at the top or inside a function) must exist, and each must parse `--help`."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def _difix_imports(script: Path) -> List[Tuple[str, str, int]]:
    """(module, name, line) of every `from difix_ns... import name` in `script`, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "difix_ns":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names if alias.name.startswith("difix_ns")]
    return found


def test_there_are_benchmark_scripts_to_check():
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_difix_ns_name_a_benchmark_imports_exists(script: Path):
    missing = []
    for module_name, name, line in _difix_imports(script):
        module = importlib.import_module(module_name)
        if name and name != "*" and not hasattr(module, name):
            try:  # a submodule imported by name
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{script.name}:{line}: {module_name}.{name}")
    assert not missing, missing


def test_every_benchmark_script_parses_help():
    # one interpreter for all of them (each would import torch again): runpy as __main__ with --help, which
    # argparse answers with exit code 0 before any work
    code = (
        "import runpy, sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    sys.argv = [path, '--help']\n"
        "    try:\n"
        "        runpy.run_path(path, run_name='__main__')\n"
        "        bad.append(path + ': no SystemExit from --help')\n"
        "    except SystemExit as e:\n"
        "        if e.code not in (0, None):\n"
        "            bad.append(f'{path}: exit {e.code}')\n"
        "    except Exception as e:\n"
        "        bad.append(f'{path}: {type(e).__name__}: {e}')\n"
        "print('BAD:' + repr(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("BAD:")]
    assert line == ["BAD:[]"], (line, result.stderr[-3000:])
