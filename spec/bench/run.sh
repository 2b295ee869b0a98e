#!/usr/bin/env bash
# Runs every benchmark spec/bench/bench_*.sh (each prints its own figures and
# ratios against baselines measured in the same run). `make bench` calls it.
#   bash spec/bench/run.sh [NAME...]   only bench_NAME.sh for each NAME given
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
if (($#)); then
  files=()
  for n in "$@"; do files+=("spec/bench/bench_$n.sh"); done
else
  files=(spec/bench/bench_*.sh)
fi
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "bench: no such benchmark: $f"; status=1; continue; }
  echo "== $f"
  bash "$f" || { echo "bench: $f failed"; status=1; }
done
exit $status
