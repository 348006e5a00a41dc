"""Small commands of the GPU run that need Python (and torch) rather than a benchmark script.

    python benchmarks/gpu/probe.py env OUT.json     # the machine: GPU, driver, torch, CUDA, nvcc, CPU count
    python benchmarks/gpu/probe.py build-gsplat     # JIT-compile gsplat's CUDA kernels (minutes, once per machine)
    python benchmarks/gpu/probe.py has MODULE...    # exit 0 if every module can be found (nothing imported)
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _command_output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def env(out: Path) -> dict:
    import torch

    info: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "nvcc": _command_output(["nvcc", "--version"]),
        "driver": _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
    }
    if info["nvcc"]:
        info["nvcc"] = info["nvcc"].splitlines()[-1]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return info


def build_gsplat() -> None:
    """Compile gsplat's CUDA extension for this GPU only (TORCH_CUDA_ARCH_LIST) with most cores (MAX_JOBS)."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("build-gsplat needs a CUDA GPU")
    major, minor = torch.cuda.get_device_capability(0)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    os.environ.setdefault("MAX_JOBS", str(max(4, (os.cpu_count() or 8) - 6)))
    print(f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} MAX_JOBS={os.environ['MAX_JOBS']} "
          f"TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR', '(default)')}", flush=True)  # fmt: skip
    start = time.perf_counter()
    from gsplat.cuda._backend import _C

    if _C is None:
        raise SystemExit("gsplat's CUDA extension did not build (see the messages above)")
    print(f"gsplat CUDA extension ready in {time.perf_counter() - start:.0f} s: {_C.__file__}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["env"] and len(argv) == 2:
        env(Path(argv[1]))
        return 0
    if argv == ["build-gsplat"]:
        build_gsplat()
        return 0
    if argv[:1] == ["has"] and len(argv) > 1:
        missing = [m for m in argv[1:] if importlib.util.find_spec(m) is None]
        if missing:
            print(f"not installed: {', '.join(missing)}")
        return 1 if missing else 0
    print(__doc__)
    return 0 if argv in (["--help"], ["-h"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
