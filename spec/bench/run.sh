#!/usr/bin/env bash
# Runs every benchmark spec/bench/bench_*.sh, then prints ONE table of every
# figure they measured in this run: work, floor or anchor, both times, ratio,
# target and verdict (each benchmark also prints its own details as it goes).
# `make bench` calls it.
#   bash spec/bench/run.sh [NAME...]   only bench_NAME.sh for each NAME given
#   CP_BENCH_QUICK=1                   a quick run for development: fewer
#                                      rounds, a smaller log, a short soak
set -uo pipefail
cd "$(dirname "$0")/../.."
. spec/bench/lib.sh
if [ -n "${CP_BENCH_QUICK:-}" ]; then
  export ROUNDS=${ROUNDS:-3} REPS=${REPS:-1} CP_BENCH_LOG_LINES=${CP_BENCH_LOG_LINES:-250000}
  export SOAK_CYCLES=${SOAK_CYCLES:-20} SOAK_VALGRIND_CYCLES=${SOAK_VALGRIND_CYCLES:-0}
  export SCALE_ROUNDS=${SCALE_ROUNDS:-3}
fi
BENCH_ROWS=$(mktemp)
export BENCH_ROWS
trap 'rm -f "$BENCH_ROWS"' EXIT
status=0
if (($#)); then
  files=()
  for n in "$@"; do files+=("spec/bench/bench_$n.sh"); done
else
  files=(spec/bench/bench_*.sh)
fi
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "bench: no such benchmark: $f"; status=1; continue; }
  echo "== $f"
  bash "$f" || { echo "bench: $f failed"; status=1; }
done
echo
echo "== summary: every figure from this run (started $started; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
bench_table <"$BENCH_ROWS"
grep -q . "$BENCH_ROWS" || { echo "bench: no figures"; status=1; }
exit $status
