#!/usr/bin/env bash
# The README's test command: installs the Debian packages the build needs (when root; otherwise
# prints the apt-get line to run), configures a fresh build, builds everything (CUDA sources too
# when nvcc exists, even without a GPU), runs every test with CTest and exits non-zero on any
# failure. [cuda] tests report "skipped" where there is no GPU.
#   tests/run.sh [extra ctest arguments]      BUILD_DIR=... to choose the build directory
set -euo pipefail
start=$SECONDS
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source "$root/cmake/ensure-packages.sh"
ensure_packages

build=${BUILD_DIR:-$root/build/tests}
rm -rf "$build"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
jobs=$(nproc)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${MAMBATRACK_CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
rc=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@" || rc=$?
echo "tests/run.sh: finished in $((SECONDS - start)) s (exit $rc)"
exit $rc
