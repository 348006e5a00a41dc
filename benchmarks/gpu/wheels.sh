#!/usr/bin/env bash
# Build the wheel folder that travels to the GPU machine with a run of benchmarks/gpu/run.sh.
#
#   benchmarks/gpu/wheels.sh [--optional] [DIR]     # DIR defaults to benchmarks/gpu/wheels (git-ignored)
#
# Downloads (pip download, no dependencies) the [required] wheels of benchmarks/gpu/wheels.txt, and with
# --optional also the [optional] ones (the progressive_overhead step), for CPython 3.12 on Linux x86_64, then
# checks the folder: one wheel per listed package at its pinned version, every requirement of the required ones
# met by the folder or the GPU image, and wheels + tracked files within the 64 MiB that travel with a call.
# Sizes as built here: required 13 MiB, with --optional 29 MiB.
#
# Then take benchmarks/gpu/wheels/ along with the repository to the GPU machine and run benchmarks/gpu/run.sh there.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OPTIONAL=""
DIR=""
for arg in "$@"; do
  case "$arg" in
    --optional) OPTIONAL=--optional ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) DIR="$arg" ;;
  esac
done
DIR="${DIR:-$REPO/benchmarks/gpu/wheels}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3)"; fi

mapfile -t PINS < <("$PY" "$REPO/benchmarks/gpu/packages.py" pins $OPTIONAL)
PLATFORMS=(--platform any --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 5 39); do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done

rm -rf "$DIR"
mkdir -p "$DIR"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" -d "$DIR" "${PINS[@]}"
"$PY" "$REPO/benchmarks/gpu/packages.py" check --wheels "$DIR" $OPTIONAL
du -sh "$DIR"
