#!/usr/bin/env bash
# The [cuda] test suite under compute-sanitizer on a GPU machine: memcheck and racecheck, one
# process per test file and tool, all at once, each under a time
# limit (the training and mixed-precision files one process per test case, as they run whole
# training loops); the training runs take 8 steps (MAMBATRACK_TINY_STEPS) instead of 50. Prints one line per
# process (the tool's summary, Catch's result, the exit code) and leaves the logs in LOG_DIR. At
# most JOBS (default 16) sanitizer processes run at once.
#   bash tests/cuda/sanitize.sh BUILD_DIR [LOG_DIR] [LIMIT_SECONDS]
set -uo pipefail
build=${1:?usage: sanitize.sh BUILD_DIR [LOG_DIR] [LIMIT_SECONDS]}
logs=${2:-${TMPDIR:-/tmp}/mambatrack-sanitize}
limit=${3:-600}
exe=$build/tests/test_cuda
command -v compute-sanitizer >/dev/null || { echo "sanitize.sh: compute-sanitizer not found"; exit 1; }
[ -x "$exe" ] || { echo "sanitize.sh: $exe not built"; exit 1; }
rm -rf "$logs" && mkdir -p "$logs"
export MAMBATRACK_TINY_STEPS=${MAMBATRACK_TINY_STEPS:-8}

# One process per test file; the training files (whose cases each run whole training loops) one
# per test case, named by the case's name up to its first character that a Catch test spec treats
# specially (a comma, a bracket, a quote), then a trailing wildcard.
heavy=() light=()
for f in "$(dirname "$0")"/test_*_cuda.cu; do
  name=$(basename "$f" .cu)
  case $name in
    test_training_cuda | test_mixed_precision_cuda)
      while IFS= read -r case_name; do
        case_name=${case_name%%[,\[\]\"]*}
        [ -n "$case_name" ] && heavy+=("$case_name*")
      done < <("$exe" -# --list-test-names-only "[#$name]" | sed 's/[[:space:]]*$//' | grep -v '^$' | grep -v 'test cases')
      ;;
    *) light+=("[#$name]") ;;
  esac
done
specs=("${heavy[@]}" "${light[@]}")  # the long runs start first

i=0
for spec in "${specs[@]}"; do
  for tool in memcheck racecheck; do
    i=$((i + 1))
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-16}" ]; do wait -n; done
    log=$logs/$(printf '%02d' $i)-$tool.log
    (echo "$tool $spec" > "$log"
     timeout "$limit" compute-sanitizer --tool "$tool" --print-limit 30 "$exe" -# "$spec" >> "$log" 2>&1
     echo "exit $?" >> "$log") &
  done
done
wait

status=0
for log in "$logs"/*.log; do
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1 | sed 's/^=* *//')
  result=$(grep -E '^test cases|All tests passed' "$log" | tail -1)
  code=$(tail -1 "$log")
  echo "$(head -1 "$log"): ${summary:-no summary} | ${result:-no result} | $code"
  [ "$code" = "exit 0" ] || status=1
done
exit $status
