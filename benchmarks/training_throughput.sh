#!/usr/bin/env bash
# End-to-end training throughput of the mambatrack program: the MAMBA-PT base config and the
# FM4NPP mamba_5m / mamba2_5m sections (the seeds' own files), on simulated events, for a few
# hundred optimizer steps. Prints the trainer's tokens/s (mean of the metrics records after the
# first, which holds the warm-up: allocation, cuBLASLt plan search) and the peak GPU memory the
# program reports. PRECISION: the GPU's --precision (fp32 or bf16 mixed precision; default fp32);
# GRAPHS: --cuda-graphs (on or off; default on); ONLY: mambapt or fm4npp to run one; the
# environment's EXTRA is added to every command line (e.g. EXTRA="--set model.gradient_checkpointing=false").
#   bash benchmarks/training_throughput.sh BUILD_DIR [cuda|cpu] [STEPS] [fp32|bf16] [on|off] [ONLY]
set -euo pipefail
build=${1:?usage: training_throughput.sh BUILD_DIR [cuda|cpu] [STEPS] [fp32|bf16] [on|off] [ONLY]}
device=${2:-cuda}
steps=${3:-200}
precision=${4:-fp32}
graphs=${5:-on}
only=${6:-}
exe=$build/examples/mambatrack
seeds=$(cd "$(dirname "$0")/.." && pwd)/../shared/seeds/configs
work=${TMPDIR:-/tmp}/mambatrack-throughput
mkdir -p "$work"

# tokens/s of metrics.jsonl's train records, the first one (warm-up) left out.
rate() {
  python3 - "$1" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
t = [x["tokens_per_s"] for x in r if x.get("split", "train") == "train" and "tokens_per_s" in x][1:]
print(f"{sum(t) / len(t):,.0f}" if t else "n/a")
PY
}

run() {  # name, then the program's arguments
  local name=$1; shift
  rm -rf "$work/$name"
  local log="$work/$name.log"
  # shellcheck disable=SC2086  # EXTRA: more program options, split on spaces
  "$exe" "$@" ${EXTRA:-} --run-dir "$work/$name" --device "$device" --precision "$precision" >"$log" 2>&1 ||
    { tail -20 "$log"; return 1; }
  printf '%-34s %12s tokens/s   %s\n' "$name" "$(rate "$work/$name/metrics.jsonl")" \
    "$(grep -o 'peak GPU memory: .*' "$log" || echo '')"
}

echo "device: $device ($precision, CUDA graphs $graphs), $steps steps each; logs in $work"
# MAMBA-PT base: batch 128 x 4 accumulation, simulated events (20 x 2,000 particles).
[ "$only" = fm4npp ] || run mambapt-base pretrain-mdm --config "$seeds/mamba-pt/base_config.yaml" \
  --set data.data_dir= --set training.max_steps="$steps" --set logging.log_every_n_steps=20 \
  --set training.eval_every_steps=1000000 --cuda-graphs "$graphs"
[ "$only" = mambapt ] && exit 0
# FM4NPP: one micro-batch of 16 events per step (the seed's local_batch_size).
for section in mamba_5m mamba2_5m; do
  run "fm4npp-$section" pretrain-fm --config "$seeds/fm4npp/mamba_pretrain.yaml" --config-section "$section" \
    --set data_root= --set total_steps="$steps" --set batch_size=16 --set local_batch_size=16 \
    --set eval_every_steps=0 --cuda-graphs "$graphs"
done
