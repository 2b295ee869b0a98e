#!/usr/bin/env bash
# `make bench`: runs each spec/bench/bench_*.sh in turn (or only the names
# given: run.sh stats). Every benchmark prints its figures and its ratios
# against baselines it measures in the same run. Exit 1 when one failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
rc=0
shopt -s nullglob
if [ $# -gt 0 ]; then
  list=(); for n in "$@"; do list+=("spec/bench/bench_$n.sh"); done
else
  list=(spec/bench/bench_*.sh)
fi
for b in "${list[@]}"; do
  echo "== $b"
  if [ ! -f "$b" ]; then echo "bench: $b not found"; rc=1; continue; fi
  bash "$b" || { echo "bench: $b failed"; rc=1; }
done
exit $rc
