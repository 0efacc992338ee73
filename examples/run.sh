#!/usr/bin/env bash
# The README's main job: installs what is missing (as root; otherwise prints the apt-get line),
# builds the mambatrack program (Release), and pretrains a small MAMBA-PT model (MDM + NTP) on
# simulated TrackML events (on the GPU when there is one, --device auto; else the CPU), printing
# MDM and NTP accuracy on held-out events at the end and where the checkpoint and metrics are.
#   examples/run.sh [extra pretrain-mdm options, e.g. --set training.max_steps=300 --threads 1]
set -euo pipefail
start=$SECONDS
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source "$root/cmake/ensure-packages.sh"
ensure_packages
build=${BUILD_DIR:-$root/build/release}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMAMBATRACK_BUILD_TESTS=OFF \
      -DMAMBATRACK_BUILD_BENCHMARKS=OFF ${MAMBATRACK_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" --target mambatrack_cli -j "$(nproc)"
run_dir=${RUN_DIR:-$root/runs/quickstart}
echo "== pretraining on simulated events (run directory: $run_dir)"
"$build/examples/mambatrack" pretrain-mdm --config "$root/examples/configs/quickstart.yaml" \
    --run-dir "$run_dir" --device auto "$@"
echo "examples/run.sh: finished in $((SECONDS - start)) s"
