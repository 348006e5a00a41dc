#!/usr/bin/env bash
# The GPU run: every CUDA path and GPU benchmark of difix-ns, in under 9 minutes, on a CUDA machine whose Python
# has torch but not diffusers, gsplat or nerfstudio (they come as wheels, see wheels.txt and wheels.sh).
#
#   benchmarks/gpu/run.sh [--wheels DIR] [--work DIR] OUT_DIR   # on the GPU machine
#   benchmarks/gpu/run.sh --dry-run [--skip-optional] [--wheels DIR] OUT_DIR   # on CPU: checks, runs nothing heavy
#
# Steps (benchmarks/gpu/steps.py has the list; each under `timeout`, within one 540 s budget): machine info,
# install the wheels, check their requirements, compile gsplat's CUDA kernels (in the background), the CUDA tests
# of the fixer (bf16 autocast vs fp32, out-of-memory halving), fixer latency at SD-Turbo size (576x1024 and
# 512x512, bf16, eager and torch.compile, against a plain diffusers call), the CUDA tests of the rasterizer,
# CPU compositing vs gsplat fused rasterization (parity and speed), and, if the optional wheels came along,
# difix-splatfacto vs splatfacto at 256 px. OUT_DIR gets summary.json, summary.md and logs.tar.gz (logs and the
# steps' raw outputs), three files, so that a device call can bring them all back.
# The dry run writes dry_run.json and dry_run.md (and the checks' logs) into OUT_DIR.
#
# Python: $PYTHON if set; else the repository's .venv for the dry run if there is one; else python3.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-2}"; }
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DRY=0
WHEELS="$REPO/benchmarks/gpu/wheels"
WORK=/tmp/difix-ns-gpu-run
OUT=""
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-optional) EXTRA+=(--skip-optional) ;;
    --wheels) WHEELS="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ "$DRY" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
else
  PY="$(command -v python3)"
fi
command -v timeout >/dev/null || { echo "run.sh needs coreutils' timeout" >&2; exit 1; }
cd "$REPO"

if [ "$DRY" = 1 ]; then
  exec "$PY" benchmarks/gpu/steps.py dry-run "$OUT" --wheels "$WHEELS" "${EXTRA[@]}"
fi
rm -rf "$WORK" && mkdir -p "$WORK"
exec "$PY" benchmarks/gpu/steps.py run "$OUT" --wheels "$WHEELS" --work "$WORK" --started "$(date +%s)"
