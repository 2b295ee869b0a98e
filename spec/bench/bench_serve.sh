#!/usr/bin/env bash
# Many tenants through one `cpdocker serve` (issue 14): N (20) provisions of
# 2-service instances sent at once vs one alone and vs N separate cpdocker
# processes; status/health_check latency, 100 followed log subscriptions
# over 20 instances and the server's RSS meanwhile. See serve_bench.lua.
#   N=20 LOGS=20 SUBS=100 bash spec/bench/bench_serve.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exec lua5.4 -e 'package.path = "spec/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
  package.cpath = "build/?.so;" .. package.cpath' spec/bench/serve_bench.lua
