"""Processes that load torch through difix_ns wait passively in OpenMP (see difix_ns/__init__.py), unless the user
chose a policy; the ns-train subprocesses `difix_ns.runner` starts get the same."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_after_import(env: dict) -> str:
    code = "import difix_ns, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_importing_difix_ns_sets_passive_waiting_unless_chosen():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_after_import(env) == "PASSIVE"
    assert _policy_after_import({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
