#!/usr/bin/env bash
# Stats benchmark (issues 5, 15): project-wide cold sampling of 1, 10 and 30
# containers from the kernel (the default for a local daemon) and from the
# daemon's stats API, against sampling them one after another and
# `docker stats --no-stream`, plus a warm persistent monitor. Needs the
# daemon and ./cpdocker built.
#   REPS=3 (median of REPS runs per figure); CP_BENCH_QUICK=1 skips the
#   30-container one-by-one baseline (about a minute).
set -uo pipefail
cd "$(dirname "$0")/../.."
. spec/bench/lib.sh
id="bench_stats$(date +%s)$$"
own_rows=
if [ -z "${BENCH_ROWS:-}" ]; then own_rows=$(mktemp); export BENCH_ROWS=$own_rows; fi
cleanup() {
  docker ps -aq --filter "label=ctrlplane.project=cp-$id" | xargs -r docker rm -f >/dev/null 2>&1
  [ -n "$own_rows" ] && rm -f "$own_rows"
}
trap cleanup EXIT
LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/?.so;;" \
  lua5.4 spec/bench/stats_bench.lua "$id" "${REPS:-3}"
rc=$?
[ -n "$own_rows" ] && bench_table <"$own_rows"
exit $rc
