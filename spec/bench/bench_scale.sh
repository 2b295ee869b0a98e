#!/usr/bin/env bash
# Flat as the daemon fills (issue 15.3): provision, status, resources, deploy
# and deprovision of one instance with 100 other instances (300 containers)
# on the daemon vs without them; target <= 1.2x. SCALE_ROUNDS=5 rounds per phase.
set -uo pipefail
cd "$(dirname "$0")/../.."
. spec/bench/lib.sh
tag="$(date +%s)$$"
own_rows=
if [ -z "${BENCH_ROWS:-}" ]; then own_rows=$(mktemp); export BENCH_ROWS=$own_rows; fi
cleanup() {
  ./cpdocker deprovision "inst_bscale_$tag" >/dev/null 2>&1
  docker ps -aq --filter "label=ctrlplane.bench-fill=$tag" | xargs -r docker rm -f >/dev/null 2>&1
  docker network ls -q --filter "label=ctrlplane.bench-fill=$tag" | xargs -r docker network rm >/dev/null 2>&1
  [ -n "$own_rows" ] && rm -f "$own_rows"
}
trap cleanup EXIT
timeout 1800 lua5.4 spec/bench/scale_bench.lua "$tag" "${SCALE_ROUNDS:-5}"
rc=$?
[ -n "$own_rows" ] && bench_table <"$own_rows"
exit $rc
