#!/usr/bin/env bash
# Many tenants through one `cpdocker serve` (issue 14): N (20) provisions of
# 2-service instances sent at once vs one alone and vs N separate cpdocker
# processes; status/health_check latency, 100 followed log subscriptions
# over 20 instances and the server's RSS meanwhile. See serve_bench.lua.
#   N=20 LOGS=20 SUBS=100 bash spec/bench/bench_serve.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. spec/bench/lib.sh
own_rows=
if [ -z "${BENCH_ROWS:-}" ]; then own_rows=$(mktemp); export BENCH_ROWS=$own_rows; fi
trap '[ -n "$own_rows" ] && rm -f "$own_rows"' EXIT
lua5.4 -e 'package.path = "spec/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
  package.cpath = "build/?.so;" .. package.cpath' spec/bench/serve_bench.lua
rc=$?
[ -n "$own_rows" ] && bench_table <"$own_rows"
exit $rc
