"""summary.json and summary.md of a GPU run, computed from what its steps wrote (never typed in by hand).

Reads, under the run's work folder: steps.json (steps.py's records), data/env.json, data/*.xml (pytest JUnit
reports), data/fixer_latency.json, data/rasterize.json, data/progressive_overhead.json. Any of them may be
missing (a step skipped, failed or stopped): the summary says so instead of failing.

    python benchmarks/gpu/summary.py WORK_DIR OUT_DIR     # rewrite the summary of a finished run
"""

from __future__ import annotations

import calendar
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

SCHEMA = "difix-ns-gpu-run/1"
# The goals (issue 15 / README): post-processing <= 20 ms per frame at 576x1024, >= 1.5x faster than a
# plain diffusers call of the same weights, the viewer >= 20 fps at 512 px, progressive overhead <= 1.15x.
GOAL_MS_576x1024 = 20.0
GOAL_SPEEDUP = 1.5
GOAL_VIEWER_FPS = 20.0
GOAL_OVERHEAD = 1.15
MIN_GRAD_COSINE = 0.99

__all__ = ["build", "markdown", "write"]


def _load(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> Dict[str, Any]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "").strip().splitlines()[0][:300] if child.get("message") else ""
        cases.append({"test": f"{case.get('classname', '')}::{case.get('name', '')}", "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message})  # fmt: skip
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {**counts, "cases": cases}


def _best(rows: List[dict], h: int, w: int) -> Optional[dict]:
    """The fastest of our variants (eager or compiled) at that size."""
    ours = [r for r in rows if r["height"] == h and r["width"] == w and r["variant"].startswith("ours")]
    return min(ours, key=lambda r: r["ms_per_frame"]) if ours else None


def _goal(goal: str, value: Optional[float], target: str, met: Optional[bool], detail: str = "") -> dict:
    return {"goal": goal, "value": value, "target": target, "met": met, "detail": detail}


def _fixer_goals(fixer: Optional[dict]) -> List[dict]:
    rows = (fixer or {}).get("rows", [])
    best, viewer = _best(rows, 576, 1024), _best(rows, 512, 512)
    none = "not measured (step fixer_latency did not write it)"
    return [
        _goal("Difix post-processing, 576x1024, bf16 (ms/frame)", best and round(best["ms_per_frame"], 2),
              f"<= {GOAL_MS_576x1024:g}", best and best["ms_per_frame"] <= GOAL_MS_576x1024,
              best["variant"] if best else none),
        _goal("speed-up over the plain diffusers call, 576x1024", best and round(best["ratio_vs_plain"], 2),
              f">= {GOAL_SPEEDUP:g}x", best and best["ratio_vs_plain"] >= GOAL_SPEEDUP,
              best["variant"] if best else none),
        _goal("viewer post-processing, 512x512 (frames/s)", viewer and round(1000 / viewer["ms_per_frame"], 1),
              f">= {GOAL_VIEWER_FPS:g}", viewer and 1000 / viewer["ms_per_frame"] >= GOAL_VIEWER_FPS,
              viewer["variant"] if viewer else none),
    ]  # fmt: skip


def _raster_goals(raster: Optional[dict]) -> List[dict]:
    sizes = [s for s in (raster or {}).get("sizes", []) if "parity" in s]
    if not sizes:
        msg = "not measured (step rasterize_bench did not write it)"
        return [
            _goal("rasterization parity, CUDA vs CPU (lowest gradient cosine)", None, f">= {MIN_GRAD_COSINE}", None,
                  msg),
            _goal("rasterization speed-up, forward+backward, CUDA vs CPU", None, "reported", None, msg),
        ]
    worst = min(((s["size"], k, v["cosine"]) for s in sizes for k, v in s["parity"]["gradients"].items()),
                key=lambda t: t[2])  # fmt: skip
    max_rgb = max(s["parity"]["rgb_max_abs"] for s in sizes)
    largest = max(sizes, key=lambda s: s["size"])
    speedup = largest["cuda"]["speedup_forward_backward"]
    return [
        _goal("rasterization parity, CUDA vs CPU (lowest gradient cosine)", round(worst[2], 5),
              f">= {MIN_GRAD_COSINE}", worst[2] >= MIN_GRAD_COSINE,
              f"{worst[1]} at {worst[0]} px; largest rgb difference {max_rgb:.2e}"),
        _goal("rasterization speed-up, forward+backward, CUDA vs CPU", round(speedup, 1), "reported", None,
              f"{largest['size']} px, {raster.get('num_gaussians')} Gaussians"),
    ]  # fmt: skip


def _overhead_goal(progressive: Optional[dict]) -> dict:
    if not progressive:
        return _goal("difix-splatfacto / splatfacto wall time", None, f"<= {GOAL_OVERHEAD}x", None,
                     "not measured (step progressive_overhead did not write it)")  # fmt: skip
    p = progressive
    detail = (f"{p['iterations']} iterations at {p['resolution']} px, {p['updates']} updates; "
              f"at the paper's period {p['ratio_at_paper_period']:.3f}x")  # fmt: skip
    return _goal("difix-splatfacto / splatfacto wall time", round(p["ratio"], 3), f"<= {GOAL_OVERHEAD}x",
                 p["ratio"] <= GOAL_OVERHEAD, detail)  # fmt: skip


def build(work: Path, started: float, budget_s: int) -> Dict[str, Any]:
    """The summary of the run whose files are under `work` (see the module docstring)."""
    data = work / "data"
    steps = _load(work / "steps.json") or []
    tests = {p.stem: _junit(p) for p in sorted(data.glob("*.xml"))} if data.is_dir() else {}
    fixer, raster = _load(data / "fixer_latency.json"), _load(data / "rasterize.json")
    progressive = _load(data / "progressive_overhead.json")
    passed = sum(t["passed"] for t in tests.values())
    failed = sum(t["failed"] + t["error"] for t in tests.values())
    skipped = sum(t["skipped"] for t in tests.values())
    total = passed + failed + skipped
    counts = f"{passed} passed, {failed} failed, {skipped} skipped" if tests else "no test report"
    test_goal = _goal("CUDA tests", f"{passed} of {total} passed" if tests else None, "all pass, none skipped",
                      (failed == 0 and skipped == 0) if tests else None, counts)  # fmt: skip
    goals = [*_fixer_goals(fixer), test_goal, *_raster_goals(raster), _overhead_goal(progressive)]
    required_failed = [s["name"] for s in steps if s["status"] in ("failed", "timeout") and not s.get("optional")]
    return {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "budget_s": budget_s,
        "ok": bool(steps) and not required_failed,
        "failed_steps": required_failed,
        "machine": _load(data / "env.json"),
        "steps": steps,
        "goals": goals,
        "tests": tests,
        "fixer_latency": fixer,
        "rasterization": raster,
        "progressive_overhead": progressive,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(s: Dict[str, Any]) -> str:
    m = s.get("machine") or {}
    gpu = (m.get("gpu") or {}).get("name", "no GPU")
    if s["ok"]:
        verdict = "all required steps passed"
    else:
        verdict = "FAILED: " + ", ".join(s["failed_steps"]) if s["failed_steps"] else "no step ran"
    out = [f"# GPU run: {gpu}", "",
           f"torch {m.get('torch', '?')} (CUDA {m.get('torch_cuda', '?')}), driver {m.get('driver', '?')}, "
           f"{m.get('cpu_count', '?')} CPUs; started {s['started']}, {s['seconds']:.0f} s of the {s['budget_s']} s "
           f"budget; {verdict}.",
           "", "## Goals", "", "| goal | measured | target | met | detail |", "|---|---|---|---|---|"]  # fmt: skip
    for g in s["goals"]:
        met = {True: "yes", False: "NO", None: "-"}[g["met"]]
        out.append(f"| {g['goal']} | {_fmt(g['value'])} | {g['target']} | {met} | {g['detail'].replace('|', '/')} |")
    out += ["", "## Steps", "", "| step | status | seconds | limit s | note |", "|---|---|---|---|---|"]
    for st in s["steps"]:
        note = st.get("reason", "").replace("|", "/")
        out.append(f"| {st['name']} | {st['status']} | {st['seconds']:.0f} | {st.get('timeout_s') or '-'} | {note} |")
    rows = (s.get("fixer_latency") or {}).get("rows", [])
    if rows:
        fl = s["fixer_latency"]
        out += ["", f"## Fixer latency ({fl['model']}, batch {fl['batch']}, precision {fl['precision']}, "
                f"{fl['iters']} timed calls)", "",
                "| size | variant | ms/frame | peak MiB | speed-up vs plain | compile s |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            out.append(f"| {r['height']}x{r['width']} | {r['variant']} | {r['ms_per_frame']:.2f} | {r['peak_mib']:.0f}"
                       f" | {_fmt(r.get('ratio_vs_plain'))} | {_fmt(r.get('compile_s'))} |")  # fmt: skip
    sizes = (s.get("rasterization") or {}).get("sizes", [])
    if sizes:
        ra = s["rasterization"]
        out += ["", f"## Rasterization: CPU compositing vs gsplat fused CUDA ({ra['num_gaussians']} Gaussians, SH "
                f"degree {ra['sh_degree']}, {ra['threads']} CPU threads)", "",
                "| size | visible | CPU f / f+b ms | CUDA f / f+b ms | speed-up f+b | max abs rgb "
                "| lowest grad cosine |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for z in sizes:
            cpu, cuda, par = z["cpu"], z.get("cuda"), z.get("parity")
            low = min(par["gradients"].items(), key=lambda kv: kv[1]["cosine"]) if par else None
            out.append(
                f"| {z['size']} | {z['visible']} | {cpu['forward_ms'][0]:.1f} / {cpu['forward_backward_ms'][0]:.1f} | "
                + (f"{cuda['forward_ms'][0]:.2f} / {cuda['forward_backward_ms'][0]:.2f} | "
                   f"{cuda['speedup_forward_backward']:.0f}x | {par['rgb_max_abs']:.2e} | "
                   f"{low[1]['cosine']:.5f} ({low[0]}) |" if cuda else "- | - | - | - |")
            )  # fmt: skip
    pr = s.get("progressive_overhead")
    if pr:
        out += ["", "## Progressive overhead", "",
                f"difix-splatfacto {pr['difix_splatfacto_s']} s vs splatfacto {pr['splatfacto_s']} s at "
                f"{pr['iterations']} iterations, {pr['resolution']} px, fixer {pr['fixer']}: ratio {pr['ratio']:.3f}x "
                f"({pr['updates']} updates); at one update per 1500 steps "
                f"{pr['ratio_at_paper_period']:.3f}x."]  # fmt: skip
    if s["tests"]:
        out += ["", "## CUDA tests", "", "| test | outcome | seconds | message |", "|---|---|---|---|"]
        for t in s["tests"].values():
            for c in t["cases"]:
                out.append(f"| {c['test']} | {c['outcome']} | {c['seconds']} | {c['message'].replace('|', '/')} |")
    return "\n".join(out) + "\n"


def write(work: Path, out: Path, started: float, budget_s: int) -> Dict[str, Any]:
    result = build(work, started, budget_s)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    work_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    previous = _load(out_dir / "summary.json") or {}
    begun = calendar.timegm(time.strptime(previous["started"], "%Y-%m-%dT%H:%M:%SZ")) if previous else time.time()
    write(work_dir, out_dir, started=begun, budget_s=previous.get("budget_s", 540))
