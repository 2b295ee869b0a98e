#!/usr/bin/env bash
# `make bench`: runs every spec/bench/bench_*.sh in turn; each prints its
# figures and its ratios against baselines measured in the same run.
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
for b in spec/bench/bench_*.sh; do
  [ -e "$b" ] || continue
  printf '\n### %s\n' "$b"
  bash "$b" || { echo "bench: $b failed"; status=1; }
done
exit $status
