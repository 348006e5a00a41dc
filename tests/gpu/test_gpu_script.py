"""The GPU run (benchmarks/gpu/run.sh) on CPU: its dry run passes, its package lists agree, its step runner keeps
time limits and prerequisites, and its summary is computed from the steps' outputs in the scripts' own formats."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU))
import packages  # noqa: E402
import steps  # noqa: E402
import summary  # noqa: E402

sys.path.remove(str(GPU))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_passes(tmp_path):
    """Every step's command, module, test selection and flag checked as on the GPU image (optional step's heavy
    imports left out to keep this fast; run.sh --dry-run without --skip-optional checks them too)."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--dry-run", "--skip-optional", str(tmp_path / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "dry_run.json").read_text())
    assert report["ok"]
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("imports (required steps)", "pytest collects cuda_tests_fixers",
                 "pytest collects cuda_tests_rasterize", "benchmarks/fixer_latency.py --help",
                 "benchmarks/cpu_rasterize.py --help", "benchmarks/progressive_overhead.py --help",
                 "wheel list consistent", "budget", "step order"):  # fmt: skip
        assert checks[name]["ok"], checks[name]
    assert "4 cuda tests" in checks["pytest collects cuda_tests_fixers"]["detail"]
    assert (tmp_path / "out" / "dry_run.md").read_text().startswith("# GPU run: dry run")


def test_wheel_list_agrees_with_constraints_and_image():
    problems, _ = packages.check_lists()
    assert problems == []
    tiers = packages.read_wheel_list()
    assert {"diffusers", "gsplat"} <= set(tiers["required"])
    assert "nerfstudio" in tiers["optional"]
    assert not set(tiers["required"]) & set(tiers["optional"])


def test_sandbox_blocks_what_the_gpu_image_lacks():
    required, optional = packages.blocked_modules(), packages.blocked_modules(optional=True)
    assert "nerfstudio" in required and "tyro" in required  # not carried unless --optional
    assert "nerfstudio" not in optional and "tyro" not in optional
    assert not {"diffusers", "gsplat", "torch", "transformers", "peft", "pytest"} & set(required)
    assert "open3d" not in optional  # the stand-in in benchmarks/gpu/shims takes its place


def test_open3d_stand_in_reads_the_synthetic_point_cloud(tmp_path):
    import numpy as np

    from difix_ns.data.synth import _write_ply

    spec = importlib.util.spec_from_file_location("_open3d_shim", GPU / "shims" / "open3d" / "__init__.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    xyz = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    rgb = np.arange(60, dtype=np.uint8).reshape(20, 3)
    _write_ply(tmp_path / "p.ply", xyz, rgb)
    pcd = shim.io.read_point_cloud(str(tmp_path / "p.ply"))
    np.testing.assert_array_equal(np.asarray(pcd.points, dtype=np.float32), xyz)
    np.testing.assert_allclose(np.asarray(pcd.colors) * 255, rgb)


def _stub_steps(tmp_path: Path):
    py = sys.executable
    return [
        steps.Step("ok", "passes", [py, "-c", "print('hello')"], 30),
        steps.Step("bg", "background", [py, "-c", "import time; time.sleep(0.5)"], 30, background=True),
        steps.Step("after_bg", "needs bg", [py, "-c", "pass"], 30, needs=("bg",)),
        steps.Step("slow", "hangs", [py, "-c", "import time; time.sleep(120)"], 1),
        steps.Step("needs_slow", "needs slow", [py, "-c", "pass"], 30, needs=("slow",)),
        steps.Step("bad", "fails", [py, "-c", "raise SystemExit('broken on purpose')"], 30),
    ]


def test_runner_bounds_steps_and_honours_prerequisites(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "STEPS", _stub_steps(tmp_path))
    start = time.time()
    rc = steps.run(tmp_path / "out", tmp_path / "work", tmp_path / "no_wheels", start)
    assert rc == 1  # a required step failed
    assert time.time() - start < 60  # the hanging step was stopped at its 1 s limit
    records = {r["name"]: r for r in json.loads((tmp_path / "work" / "steps.json").read_text())}
    assert records["ok"]["status"] == "passed" and records["after_bg"]["status"] == "passed"
    assert records["bg"]["status"] == "passed"
    assert records["slow"]["status"] == "timeout" and records["slow"]["timeout_s"] == 1
    assert records["needs_slow"]["status"] == "skipped" and "slow" in records["needs_slow"]["reason"]
    assert records["bad"]["status"] == "failed" and "broken on purpose" in records["bad"]["reason"]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]
    assert json.loads((out / "summary.json").read_text())["failed_steps"] == ["slow", "bad"]


def test_runner_skips_steps_once_the_budget_is_spent(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "STEPS", _stub_steps(tmp_path)[:1])
    steps.run(tmp_path / "out", tmp_path / "work", tmp_path / "no_wheels", time.time() - steps.BUDGET_S)
    (record,) = json.loads((tmp_path / "work" / "steps.json").read_text())
    assert record["status"] == "skipped" and "out of time" in record["reason"]


def _fake_run(work: Path) -> None:
    """A finished run's files, written with the benchmark scripts' own code where it is cheap on CPU."""
    data = work / "data"
    data.mkdir(parents=True)
    (data / "env.json").write_text(json.dumps({"gpu": {"name": "NVIDIA H200"}, "torch": "2.11.0", "torch_cuda": "13.0",
                                               "driver": "580", "cpu_count": 16}))  # fmt: skip
    fixer = _load_script("fixer_latency")
    report = fixer._Report(data / "fixer_latency.json", {"model": "full (SD-Turbo size)", "batch": 1, "iters": 20,
                                                          "precision": "bf16"})  # fmt: skip
    for (h, w), plain, ours, compiled in [((576, 1024), 120.0, 30.0, 18.0), ((512, 512), 60.0, 14.0, 9.0)]:
        report.add(height=h, width=w, variant="plain", ms_per_frame=plain, peak_mib=9000.0)
        report.add(height=h, width=w, variant="ours", ms_per_frame=ours, peak_mib=5000.0, ratio_vs_plain=plain / ours,
                   max_abs_diff_vs_plain=0.01)  # fmt: skip
        report.add(height=h, width=w, variant="ours+compile", ms_per_frame=compiled, peak_mib=5000.0,
                   ratio_vs_plain=plain / compiled, compile_s=70.0)  # fmt: skip
    raster = _load_script("cpu_rasterize")
    params = {k: v.requires_grad_() for k, v in raster._scene(60, 1, 0).items()}
    _, numbers = raster._bench_size(params, 16, 1, 1)
    _, parity = raster._bench_cuda(params, 16, 1, 1, numbers, device="cpu")  # the code path, CPU against itself
    raster._write(data / "rasterize.json",
                  {"num_gaussians": 60, "sh_degree": 1, "threads": 2, "sizes": [{**numbers, **parity}]})
    (data / "cuda_tests_fixers.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.gpu.test_cuda_fixers" name="test_a" time="1.5"/>'
        '<testcase classname="tests.gpu.test_cuda_fixers" name="test_b" time="2"><failure message="bf16 vs fp32: '
        'PSNR 20 dB"/></testcase></testsuite></testsuites>'
    )
    (work / "steps.json").write_text(json.dumps([
        {"name": "fixer_latency", "title": "t", "status": "passed", "seconds": 200.0, "timeout_s": 300, "reason": ""},
        {"name": "progressive_overhead", "title": "t", "status": "skipped", "seconds": 0.0, "timeout_s": 0,
         "reason": "optional wheels not carried", "optional": True},
    ]))  # fmt: skip


def test_summary_is_computed_from_the_steps_outputs(tmp_path):
    _fake_run(tmp_path / "work")
    result = summary.write(tmp_path / "work", tmp_path / "out", started=time.time() - 300, budget_s=540)
    goals = {g["goal"]: g for g in result["goals"]}
    latency = goals["Difix post-processing, 576x1024, bf16 (ms/frame)"]
    assert latency["value"] == 18.0 and latency["met"] is True and latency["detail"] == "ours+compile"
    assert goals["speed-up over the plain diffusers call, 576x1024"]["value"] == pytest.approx(120 / 18, abs=0.01)
    assert goals["viewer post-processing, 512x512 (frames/s)"]["value"] == pytest.approx(1000 / 9, abs=0.1)
    tests = goals["CUDA tests"]
    assert tests["met"] is False and tests["value"] == "1 of 2 passed" and "1 passed, 1 failed" in tests["detail"]
    parity = goals["rasterization parity, CUDA vs CPU (lowest gradient cosine)"]
    assert parity["met"] is True and parity["value"] == pytest.approx(1.0, abs=1e-6)
    assert goals["difix-splatfacto / splatfacto wall time"]["met"] is None
    assert result["ok"] is True  # the optional step's skip is not a failure
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.startswith("# GPU run: NVIDIA H200")
    assert "| 576x1024 | ours+compile | 18.00 |" in md and "PSNR 20 dB" in md
    assert "optional wheels not carried" in md
