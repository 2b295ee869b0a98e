#!/usr/bin/env bash
# Stats benchmark (issue 5): project-wide sampling of 1, 10 and 30 containers
# against sampling them one after another and `docker stats --no-stream`,
# plus a warm persistent monitor. Needs the daemon and ./cpdocker built.
#   REPS=3 (median of REPS runs per figure); CP_BENCH_QUICK=1 skips the
#   30-container one-by-one baseline (about a minute).
set -uo pipefail
cd "$(dirname "$0")/../.."
id="bench_stats$(date +%s)$$"
cleanup() {
  docker ps -aq --filter "label=ctrlplane.project=cp-$id" | xargs -r docker rm -f >/dev/null 2>&1
}
trap cleanup EXIT
LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/?.so;;" \
  lua5.4 spec/bench/stats_bench.lua "$id" "${REPS:-3}"
