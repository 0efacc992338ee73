#!/bin/sh
# pretrain-mdm stopped at step 7 and resumed must give the same per-step losses, bit for bit, as
# an uninterrupted run (metrics.jsonl holds every step's loss as the shortest exact decimal), on
# the CPU or (DEVICE cuda) on the GPU, whose kernels are deterministic too. Exit 77 (skipped)
# when DEVICE is cuda and there is no usable GPU. PRECISION: the program's --precision (auto, fp32,
# bf16: mixed precision on the GPU, whose checkpoints hold the fp32 master weights).
#   cli_resume_check.sh MAMBATRACK QUICKSTART_YAML WORK_DIR [DEVICE] [PRECISION]
set -eu
exe=$1; config=$2; work=$3; device=${4:-cpu}; precision=${5:-auto}
rm -rf "$work" && mkdir -p "$work"
common="--config $config --device $device --precision $precision --threads 1 --set training.max_steps=16 --set data.simulate_events=10 \
  --set data.simulate_particles=300 --set logging.log_every_n_steps=1 --set training.eval_every_steps=8 \
  --set training.checkpoint_every_steps=5"
if ! "$exe" pretrain-mdm $common --run-dir "$work/a" > "$work/a.log" 2>&1; then
  if [ "$device" = cuda ] && grep -q -- "--device cuda:" "$work/a.log"; then
    echo "no GPU: $(grep -- "--device cuda:" "$work/a.log")"; exit 77
  fi
  cat "$work/a.log"; exit 1
fi
cp -r "$work/a/data" "$work/b-data"
"$exe" pretrain-mdm $common --data "$work/b-data" --run-dir "$work/b" --stop-at-step 7 > "$work/b1.log" 2>&1
grep -q "stopped at step 7" "$work/b1.log" || { echo "the first part did not stop at step 7"; exit 1; }
"$exe" pretrain-mdm $common --data "$work/b-data" --run-dir "$work/b" --resume > "$work/b2.log" 2>&1
losses() { grep '"split":"train"' "$1" | grep -o '"loss":[^,}]*'; }
losses "$work/a/metrics.jsonl" > "$work/a.loss"
losses "$work/b/metrics.jsonl" > "$work/b.loss"
n=$(wc -l < "$work/a.loss")
[ "$n" -eq 16 ] || { echo "expected 16 train records, got $n"; exit 1; }
if cmp -s "$work/a.loss" "$work/b.loss"; then
  echo "resume check ($device, $precision): 16 steps, losses identical"
else
  echo "resume check: losses differ"; diff "$work/a.loss" "$work/b.loss"; exit 1
fi
