"""`difix-ns --help`: every job is listed with its one-line description."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from difix_ns.cli import _description, _subcommands


def test_every_job_has_a_one_line_description():
    for name, config in _subcommands().items():
        description = _description(config)
        assert description, f"difix-ns {name}: its config class {type(config).__name__} needs a docstring"
        assert "\n" not in description


def test_help_lists_each_job_with_its_description():
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that no description wraps
    result = subprocess.run(
        [str(Path(sys.executable).parent / "difix-ns"), "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, config in _subcommands().items():
        listed = [line for line in lines if f"• {name} " in line]
        assert len(listed) == 1, f"{name} is not listed once in:\n{result.stdout}"
        assert _description(config) in listed[0], f"{name} has no description in:\n{result.stdout}"


def test_a_user_error_is_one_message_and_leaves_no_output_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DIFIX_NS_DEBUG"}
    command = [str(Path(sys.executable).parent / "difix-ns"), "fix", "--input", str(tmp_path / "empty"),
               "--output", str(tmp_path / "out"), "--backend", "identity"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert "holds no images" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
    result = subprocess.run(command, capture_output=True, text=True, env={**env, "DIFIX_NS_DEBUG": "1"}, timeout=300)
    assert "Traceback" in result.stderr
