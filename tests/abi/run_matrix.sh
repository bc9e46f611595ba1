#!/usr/bin/env bash
# marshal tests: the ABI differential matrix with any seed and count (long runs).
#   tests/abi/run_matrix.sh --seed 7 --count 20000
#   tests/abi/run_matrix.sh --seed 7 --count 20000 --cc gcc --cc clang --cc clang-16 --opt=-O2 --workdir /tmp/m
# Builds the driver in build/ (or $MARSHAL_BUILD) when needed, then runs
# tests/abi/run_matrix.py (see --help there); the exit status is its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${MARSHAL_BUILD:-$root/build}
[ -f "$build/build.ninja" ] || meson setup "$build" "$root" >/dev/null
ninja -C "$build" tests/abi/abi-matrix bindings/cli/marshal >/dev/null
exec /usr/bin/python3 "$root/tests/abi/run_matrix.py" --driver "$build/tests/abi/abi-matrix" \
  --marshal "$build/bindings/cli/marshal" "$@"
