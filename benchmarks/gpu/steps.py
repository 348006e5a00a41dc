"""The GPU run's steps, run for real on a CUDA machine or checked without running on CPU (the dry run).

    python benchmarks/gpu/steps.py run OUT_DIR --wheels DIR --work DIR       # what run.sh calls on the GPU
    python benchmarks/gpu/steps.py dry-run OUT_DIR [--wheels DIR]            # what run.sh --dry-run calls

Every step is a command run under `timeout`, its output in logs/<step>.log; each step's limit is its own
`timeout_s` or what is left of the whole run's budget (BUDGET_S), whichever is less, so the run ends in time even
when steps hang. Steps whose prerequisites failed are skipped with the reason. At the end summary.py turns the
steps' records and outputs into summary.json and summary.md.

Standard library (+ `packaging` for the dry run's package checks); the GPU image's python3 runs it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import summary  # noqa: E402

sys.path.pop(0)

BUDGET_S = 540  # the whole run, install to summary: under 9 minutes (a device call allows 10)
RESERVE_S = 15  # kept back for the summary and the archive
MIN_STEP_S = 20  # a step that would get less than this is skipped as out of time
OPTIONAL_MODULES = ("nerfstudio", "tyro", "viser")  # present only if the [optional] wheels were carried


@dataclass(frozen=True)
class Step:
    """One step. `argv` may use {python}, {repo}, {data}, {site}, {here}; `python` is the interpreter running this."""

    name: str
    title: str
    argv: Sequence[str]
    timeout_s: int
    imports: Sequence[str] = ()  # modules the step needs (the dry run imports them as the GPU image would)
    pytest_files: Sequence[str] = ()  # a pytest step's files (the dry run collects `-m cuda` from them)
    script: Optional[str] = None  # the Python script run (the dry run checks that it takes the flags used)
    optional: bool = False  # needs the [optional] wheels; skipped when they are not installed
    background: bool = False  # started, then waited for by the first step that `needs` it
    needs: Sequence[str] = ()  # steps that must have passed first, else this one is skipped
    extra_pythonpath: Sequence[str] = ()


def _pytest(name: str, files: Sequence[str]) -> List[str]:
    return ["{python}", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda",
            f"--junitxml={{data}}/{name}.xml", *files]  # fmt: skip


FIXER_TESTS = ("tests/gpu/test_cuda_fixers.py",)
RASTERIZE_TESTS = ("tests/splat/test_rasterize.py", "tests/gpu/test_cuda_rasterize.py")
FIXER_IMPORTS = (
    "difix_ns.fixers.difix", "difix_ns.fixers.testing", "difix_ns.fixers.difix_checkpoint", "diffusers",
    "diffusers.models.attention_processor", "transformers", "peft", "safetensors.torch",
)  # fmt: skip
RASTERIZE_IMPORTS = (
    "difix_ns.splat.rasterize", "difix_ns.splat.composite", "gsplat.rendering", "gsplat.cuda._torch_impl",
)  # fmt: skip

STEPS: List[Step] = [
    Step("env", "machine: GPU, driver, torch, CUDA", ["{python}", "{here}/probe.py", "env", "{data}/env.json"], 30,
         imports=("torch",), script="benchmarks/gpu/probe.py"),  # fmt: skip
    Step("install", "install the carried wheels (pip --no-index --no-deps --target)", ["(built at run time)"], 120),
    Step("deps", "carried packages' requirements met on the image",
         ["{python}", "{here}/packages.py", "installed"], 30, imports=("packaging",),
         script="benchmarks/gpu/packages.py", needs=("install",)),  # fmt: skip
    Step("gsplat_build", "JIT-compile gsplat's CUDA kernels (background)",
         ["{python}", "{here}/probe.py", "build-gsplat"], 360, imports=("gsplat",),
         script="benchmarks/gpu/probe.py", background=True, needs=("install",)),  # fmt: skip
    Step("cuda_tests_fixers", "CUDA tests: bf16 autocast vs fp32, out-of-memory halving",
         _pytest("cuda_tests_fixers", FIXER_TESTS), 150, imports=("pytest", *FIXER_IMPORTS),
         pytest_files=FIXER_TESTS, needs=("install",)),  # fmt: skip
    Step("fixer_latency", "fixer latency: SD-Turbo size, bf16, eager and torch.compile, vs the plain call",
         ["{python}", "{repo}/benchmarks/fixer_latency.py", "--sizes", "576x1024", "512x512", "--precision", "bf16",
          "--also-compile", "--json", "{data}/fixer_latency.json"], 300, imports=FIXER_IMPORTS,
         script="benchmarks/fixer_latency.py", needs=("install",)),  # fmt: skip
    Step("cuda_tests_rasterize", "CUDA tests: gsplat fused rasterization vs the CPU path (images, gradients)",
         _pytest("cuda_tests_rasterize", RASTERIZE_TESTS), 120, imports=("pytest", *RASTERIZE_IMPORTS),
         pytest_files=RASTERIZE_TESTS, needs=("gsplat_build",)),  # fmt: skip
    Step("rasterize_bench", "CPU compositing vs gsplat fused rasterization: parity and speed",
         ["{python}", "{repo}/benchmarks/cpu_rasterize.py", "--cuda", "--num-gaussians", "10000", "--sizes", "128",
          "256", "--repeats", "3", "--skip-isect", "--json", "{data}/rasterize.json"], 150,
         imports=RASTERIZE_IMPORTS, script="benchmarks/cpu_rasterize.py", needs=("gsplat_build",)),  # fmt: skip
    Step("progressive_overhead", "difix-splatfacto vs splatfacto, 256 px, short run",
         ["{python}", "{repo}/benchmarks/progressive_overhead.py", "--device", "cuda", "--resolution", "256",
          "--iterations", "300", "--fix-every", "100", "--repeats", "1", "--warmup", "10",
          "--json", "{data}/progressive_overhead.json"], 180,
         imports=("nerfstudio.engine.trainer", "difix_ns.method_configs.difix_splatfacto", "difix_ns.data.synth",
                  "difix_ns.fixers.nafnet"),
         script="benchmarks/progressive_overhead.py", optional=True, needs=("gsplat_build",),
         extra_pythonpath=("{here}/shims",)),  # fmt: skip
]


@dataclass
class Record:
    name: str
    title: str
    optional: bool = False
    status: str = "pending"  # passed | failed | timeout | skipped
    seconds: float = 0.0
    timeout_s: int = 0
    returncode: Optional[int] = None
    reason: str = ""
    log: str = ""
    command: List[str] = field(default_factory=list)


def _format(argv: Sequence[str], paths: Dict[str, str]) -> List[str]:
    return [a.format(**paths) for a in argv]


def _env(paths: Dict[str, str], step: Step) -> Dict[str, str]:
    env = dict(os.environ)
    extra = [p.format(**paths) for p in step.extra_pythonpath]
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*extra, paths["site"], paths["overlay"], paths["repo"], *old])
    env.update(PYTHONUNBUFFERED="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TORCH_EXTENSIONS_DIR=paths["extensions"])  # fmt: skip
    return env


def _make_overlay(overlay: Path) -> None:
    """`difix_ns` with `method_configs/` inside, as `pip install` would lay it out (pyproject's package-dir), made
    by copying: the GPU run uses the repository through PYTHONPATH, not an install."""
    target = overlay / "difix_ns"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / "difix_ns", target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "method_configs", target / "method_configs", ignore=shutil.ignore_patterns("__pycache__"))


class Runner:
    def __init__(self, out: Path, work: Path, wheels: Path, deadline: float) -> None:
        self.out, self.work, self.wheels, self.deadline = out, work, wheels, deadline
        self.logs, self.data = work / "logs", work / "data"
        for d in (self.out, self.logs, self.data):
            d.mkdir(parents=True, exist_ok=True)
        self.paths = {
            "python": sys.executable, "repo": str(REPO), "here": str(HERE), "data": str(self.data),
            "site": str(work / "site"), "overlay": str(work / "overlay"), "extensions": str(work / "torch_extensions"),
        }  # fmt: skip
        self.records: Dict[str, Record] = {}
        self.background: Dict[str, tuple] = {}
        self.current: Optional[subprocess.Popen] = None  # the foreground step's process, ended if we are stopped

    def left(self) -> float:
        return self.deadline - time.time() - RESERVE_S

    def save(self) -> None:
        (self.work / "steps.json").write_text(json.dumps([asdict(r) for r in self.records.values()], indent=2))

    def _argv(self, step: Step) -> List[str]:
        if step.name != "install":
            return _format(step.argv, self.paths)
        wheels = sorted(str(w) for w in self.wheels.glob("*.whl"))
        return [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                "--no-cache-dir", "--upgrade", "--target", self.paths["site"], *wheels]  # fmt: skip

    def _skip_reason(self, step: Step) -> str:
        for need in step.needs:
            if need in self.background:
                self._wait(need)
            rec = self.records.get(need)
            if rec is None or rec.status != "passed":
                return f"needs step {need}, which {rec.status if rec else 'did not run'}"
        if step.name == "install" and not list(self.wheels.glob("*.whl")):
            return f"no wheels in {self.wheels} (build them with benchmarks/gpu/wheels.sh)"
        if step.optional:
            probe = [sys.executable, str(HERE / "probe.py"), "has", *OPTIONAL_MODULES]
            env = _env(self.paths, step)
            if subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode != 0:
                return f"optional wheels not carried ({', '.join(OPTIONAL_MODULES)} not installed)"
        if self.left() < MIN_STEP_S:
            return f"out of time ({max(self.left(), 0):.0f} s of the {BUDGET_S} s budget left)"
        return ""

    def start(self, step: Step) -> None:
        rec = Record(step.name, step.title, optional=step.optional, log=f"logs/{step.name}.log")
        self.records[step.name] = rec
        reason = self._skip_reason(step)
        if reason:
            rec.status, rec.reason = "skipped", reason
            print(f"[gpu run] {step.name}: skipped ({reason})", flush=True)
            self.save()
            return
        if step.optional:
            _make_overlay(Path(self.paths["overlay"]))
        rec.timeout_s = int(min(step.timeout_s, self.left()))
        rec.command = self._argv(step)
        argv = ["timeout", "-k", "10", str(rec.timeout_s), *rec.command]
        log = open(self.logs / f"{step.name}.log", "w")
        print(f"[gpu run] {step.name}: {step.title} (limit {rec.timeout_s} s)", flush=True)
        started = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=_env(self.paths, step))
        if step.background:
            ended: List[float] = []
            threading.Thread(target=lambda: (proc.wait(), ended.append(time.time())), daemon=True).start()
            self.background[step.name] = (proc, log, started, ended)
            rec.status = "running"
            self.save()
            return
        self.current = proc
        self._finish(rec, proc, log, started)
        self.current = None

    def _wait(self, name: str) -> None:
        proc, log, started, ended = self.background.pop(name)
        self._finish(self.records[name], proc, log, started, ended)

    def _finish(self, rec: Record, proc: subprocess.Popen, log, started: float, ended: Sequence[float] = ()) -> None:
        try:
            rc = proc.wait(timeout=max(rec.timeout_s - (time.time() - started) + 30, 1))
        except subprocess.TimeoutExpired:  # `timeout` itself should have ended it: make sure
            proc.kill()
            rc = proc.wait()
        log.close()
        rec.seconds, rec.returncode = round((ended[0] if ended else time.time()) - started, 1), rc
        rec.status = "passed" if rc == 0 else ("timeout" if rc in (124, 137) else "failed")
        if rec.status == "timeout":
            rec.reason = f"stopped at its {rec.timeout_s} s limit"
        elif rec.status == "failed":
            rec.reason = _last_line(self.logs / f"{rec.name}.log")
        print(f"[gpu run] {rec.name}: {rec.status} in {rec.seconds:.0f} s", flush=True)
        self.save()

    def run(self) -> None:
        for step in STEPS:
            self.start(step)
        for name in list(self.background):
            self._wait(name)
        self.save()


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(out: Path, work: Path, wheels: Path, started: float) -> int:
    runner = Runner(out, work, wheels, started + BUDGET_S)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        runner.run()
    except KeyboardInterrupt:
        print("[gpu run] interrupted: writing the summary of what ran", flush=True)
    finally:
        for proc, log, *_ in runner.background.values():
            proc.kill()
            log.close()
        if runner.current is not None:
            runner.current.kill()
        runner.save()
        result = summary.write(work, out, started=started, budget_s=BUDGET_S)
        with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
            for name in ("steps.json", "logs", "data"):
                if (work / name).exists():
                    tar.add(work / name, arcname=name)
    print((out / "summary.md").read_text())
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------------------------------- dry run
@dataclass
class Check:
    name: str
    ok: bool
    required: bool = True
    detail: str = ""


def _sandbox_checks(specs: List[dict], optional: bool, logs: Path, timeout: int = 300) -> List[Check]:
    """Run the checks `specs` in one `sandbox.py --checks` process (the GPU image's modules only, the GPU run's
    PYTHONPATH); one Check per spec, plus one if the process itself failed."""
    tier = "optional" if optional else "required"
    spec_file, result_file = logs / f"checks_{tier}.json", logs / f"results_{tier}.json"
    spec_file.write_text(json.dumps(specs, indent=2))
    result_file.unlink(missing_ok=True)
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    extra = [str(HERE / "shims")] if optional else []
    env["PYTHONPATH"] = os.pathsep.join([*extra, str(REPO), *[p for p in env.get("PYTHONPATH", "").split(":") if p]])
    argv = [sys.executable, str(HERE / "sandbox.py"), *(["--optional"] if optional else []), "--checks",
            str(spec_file), str(result_file)]  # fmt: skip
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        output = f"timed out after {timeout} s"
    (logs / f"sandbox_{tier}.log").write_text(" ".join(argv) + "\n\n" + output)
    results = json.loads(result_file.read_text()) if result_file.exists() else []
    if len(results) != len(specs):
        return [Check(f"sandbox ({tier} steps)", False, not optional, _tail(output))]
    return [_to_check(r, optional) for r in results]


def _to_check(result: dict, optional: bool) -> Check:
    seconds = f" ({result['seconds']:.0f} s)"
    if result["kind"] == "import":
        name, good = f"imports ({'optional' if optional else 'required'} steps)", f"{result['count']} modules"
    elif result["kind"] == "pytest":
        name, good = f"pytest collects {result['step']}", f"{result['count']} cuda tests"
    else:
        name, good = f"{result['step']} --help", ""
        missing = [f for f in result["flags"] if f not in result["output"]]
        if result["ok"] and missing:
            return Check(name, False, not optional, f"does not take {missing}")
        good = f"takes {' '.join(result['flags']) or 'its arguments'}"
    return Check(name, result["ok"], not optional, (good if result["ok"] else _tail(result["output"])) + seconds)


def _specs(optional: bool) -> List[dict]:
    """The checks of one tier: its steps' imports and pytest collections; the `--help` of every script goes with
    the required tier (a script's --help needs no optional package)."""
    steps = [s for s in STEPS if s.optional == optional]
    specs: List[dict] = [{"kind": "import", "modules": sorted({m for s in steps for m in s.imports})}]
    for step in steps:
        if step.pytest_files:
            specs.append({"kind": "pytest", "step": step.name, "args": ["-m", "cuda", *step.pytest_files]})
    for script in [] if optional else sorted({s.script for s in STEPS if s.script}):
        flags = sorted({f for s in STEPS if s.script == script for f in _flags(s.argv)})
        specs.append({"kind": "help", "step": script, "script": str(REPO / script), "flags": flags})
    return specs


def _flags(argv: Sequence[str]) -> List[str]:
    return [a for a in argv if re.fullmatch(r"--[a-z][a-z0-9-]*", a)]


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:])


def _cuda_marked_files() -> List[str]:
    found = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if re.search(r"pytest\.mark\.cuda\b", path.read_text(errors="replace")):
            found.append(str(path.relative_to(REPO)))
    return found


def dry_run(out: Path, wheels: Optional[Path], skip_optional: bool = False) -> int:
    import packages

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    checks: List[Check] = []
    for command in ("timeout", "bash", "tar"):
        checks.append(Check(f"command {command}", shutil.which(command) is not None))
    for command in ("nvidia-smi", "nvcc"):
        path = shutil.which(command)
        checks.append(Check(f"command {command} (GPU machine only)", path is not None, False, path or "absent here"))
    for rel in dict.fromkeys(r for s in STEPS for r in (s.script, *s.pytest_files) if r):
        checks.append(Check(f"file {rel}", (REPO / rel).is_file()))
    checks.append(Check("budget", BUDGET_S + 30 <= 600 and all(s.timeout_s <= BUDGET_S for s in STEPS), True,
                        f"{BUDGET_S} s for the whole run, every step capped by what is left of it"))  # fmt: skip
    names = [s.name for s in STEPS]
    bad_needs = [f"{s.name} needs {n}" for i, s in enumerate(STEPS) for n in s.needs if n not in names[:i]]
    unwaited = [s.name for s in STEPS if s.background and not any(s.name in t.needs for t in STEPS)]
    checks.append(Check("step order", not bad_needs and not unwaited and len(set(names)) == len(names), True,
                        "; ".join(bad_needs + [f"{u}: background, nothing waits for it" for u in unwaited])
                        or " -> ".join(names)))  # fmt: skip
    marked, covered = _cuda_marked_files(), {f for s in STEPS for f in s.pytest_files}
    uncovered = [f for f in marked if f not in covered]
    checks.append(Check("every cuda-marked test file is run", not uncovered, True,
                        f"not in any step: {uncovered}" if uncovered else f"{len(marked)} files"))  # fmt: skip
    folder = wheels if wheels is not None and wheels.is_dir() else None
    optional_built = folder is not None and any(
        n in packages._wheels_by_name(folder) for n in packages.read_wheel_list().get("optional", {})
    )
    problems, notes = packages.check_lists(folder, optional=True)
    checks.append(Check("wheel list consistent", not problems, True, "; ".join(problems + notes)))
    if folder is not None:
        folder_problems, total = packages.check_wheel_folder(folder, optional_built)
        tree = _tracked_bytes()
        fits = total + tree <= packages.CARRY_LIMIT_BYTES
        detail = f"{total / 2**20:.1f} MiB of wheels + {tree / 2**20:.1f} MiB of tracked files"
        checks.append(Check("wheel folder", not folder_problems and fits, True,
                            "; ".join(folder_problems) or (detail + ("" if fits else ": over 64 MiB"))))  # fmt: skip
    else:
        checks.append(Check("wheel folder", False, False, "not built here (benchmarks/gpu/wheels.sh): not checked"))

    tiers = [False] if skip_optional else [False, True]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for found in pool.map(lambda opt: _sandbox_checks(_specs(opt), opt, logs), tiers):
            checks += found
    if skip_optional:
        checks.append(Check("optional steps", False, False, "not checked (--skip-optional)"))

    try:  # the summary code, on a run where nothing ran
        summary.build(out / "no_run", started=time.time(), budget_s=BUDGET_S)
        checks.append(Check("summary of an empty run", True))
    except Exception as err:  # noqa: BLE001 - reported as a failed check
        checks.append(Check("summary of an empty run", False, True, repr(err)))

    failed = [c for c in checks if c.required and not c.ok]
    report = {"ok": not failed, "checks": [asdict(c) for c in checks],
              "steps": [{"name": s.name, "title": s.title, "timeout_s": s.timeout_s, "optional": s.optional,
                         "background": s.background, "needs": list(s.needs), "command": list(s.argv)}
                        for s in STEPS]}  # fmt: skip
    (out / "dry_run.json").write_text(json.dumps(report, indent=2))
    lines = ["| check | result | detail |", "|---|---|---|"]
    for c in checks:
        result = "ok" if c.ok else ("FAILED" if c.required else "not ok (optional)")
        lines.append(f"| {c.name} | {result} | {c.detail.replace('|', '/')} |")
    (out / "dry_run.md").write_text("# GPU run: dry run\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"dry run {'passed' if not failed else 'FAILED: ' + ', '.join(c.name for c in failed)}")
    return 0 if not failed else 1


def _tracked_bytes() -> int:
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum((REPO / f).stat().st_size for f in files.decode().split("\0") if f and (REPO / f).is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["run", "dry-run"])
    parser.add_argument("out", type=Path, help="where summary.json, summary.md (and logs.tar.gz) are written")
    parser.add_argument("--wheels", type=Path, default=HERE / "wheels", help="the carried wheel folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/difix-ns-gpu-run"), help="logs, data, site")
    parser.add_argument("--started", type=float, default=None, help="epoch seconds the run began (run.sh)")
    parser.add_argument("--skip-optional", action="store_true", help="dry run: leave out the optional step's imports")
    args = parser.parse_args()
    if args.mode == "dry-run":
        return dry_run(args.out, args.wheels, args.skip_optional)
    return run(args.out, args.work, args.wheels, args.started or time.time())


if __name__ == "__main__":
    sys.exit(main())
