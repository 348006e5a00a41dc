"""Run a Python command here as if on the GPU image: modules of distributions that are neither on the image
(image-packages.txt) nor carried as wheels (wheels.txt) cannot be imported, `importlib.util.find_spec` does not
see them and `importlib.metadata` does not know them (so optional-dependency checks behave as they would there).

    python benchmarks/gpu/sandbox.py [--optional] -m pytest --collect-only ...
    python benchmarks/gpu/sandbox.py [--optional] benchmarks/fixer_latency.py --help
    python benchmarks/gpu/sandbox.py [--optional] -c "import difix_ns.fixers.difix"
    python benchmarks/gpu/sandbox.py [--optional] --checks SPECS.json RESULTS.json   # the dry run's checks

Used by the dry run (steps.py) so that a missing wheel shows up on CPU, not after the GPU machine has started.
It simulates which packages exist, not their versions (the run's "deps" step checks versions there).
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import importlib.util
import runpy
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packages import blocked_modules  # noqa: E402

sys.path.pop(0)


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: Dict[str, List[str]]) -> None:
        self.blocked = blocked
        self.dists = {d for dists in blocked.values() for d in dists}

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(
                f"No module named {top!r} on the GPU machine (distribution {', '.join(self.blocked[top])} is "
                "neither on the image nor in benchmarks/gpu/wheels.txt)",
                name=fullname,
            )
        return None


def install(optional: bool = False) -> _Blocker:
    """Block the modules that the GPU machine lacks, in this process, from now on."""
    blocker = _Blocker(blocked_modules(optional))
    sys.meta_path.insert(0, blocker)
    real_find_spec, real_distribution = importlib.util.find_spec, md.distribution

    def find_spec(name, package=None):
        if name.partition(".")[0] in blocker.blocked:
            return None
        return real_find_spec(name, package)

    def distribution(name):
        from packaging.utils import canonicalize_name

        if canonicalize_name(name) in blocker.dists:
            raise md.PackageNotFoundError(name)
        return real_distribution(name)

    importlib.util.find_spec = find_spec
    md.distribution = distribution
    return blocker


def _check(spec: dict) -> dict:
    """One dry-run check in this process: {"kind": "import", "modules": [...]}, {"kind": "pytest", "args": [...]}
    (collection only; counts the items) or {"kind": "help", "script": path} (its --help text)."""
    import contextlib
    import io
    import time
    import traceback

    start, text, ok, count = time.perf_counter(), io.StringIO(), False, 0
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            if spec["kind"] == "import":
                for module in spec["modules"]:
                    importlib.import_module(module)
                ok, count = True, len(spec["modules"])
            elif spec["kind"] == "pytest":
                import pytest

                class _Count:
                    def pytest_collection_finish(self, session):
                        nonlocal count
                        count = len(session.items)

                rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *spec["args"]], plugins=[_Count()])
                ok = rc == 0 and count > 0
            else:
                sys.argv = [spec["script"], "--help"]
                try:
                    runpy.run_path(spec["script"], run_name="__main__")
                    ok = True
                except SystemExit as exit_:
                    ok = exit_.code in (0, None)
    except BaseException:  # noqa: BLE001 - a failed check, reported with its traceback
        text.write(traceback.format_exc())
    return {**spec, "ok": ok, "count": count, "output": text.getvalue()[-4000:],
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main(argv: List[str]) -> None:
    optional = bool(argv) and argv[0] == "--optional"
    if optional:
        argv = argv[1:]
    if not argv:
        raise SystemExit(__doc__)
    install(optional)
    if argv[0] == "--checks":  # a JSON list of checks in, a JSON list of results out (one process for all)
        import json

        specs = json.loads(Path(argv[1]).read_text())
        Path(argv[2]).write_text(json.dumps([_check(spec) for spec in specs], indent=2))
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<sandbox -c>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = list(argv)
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
