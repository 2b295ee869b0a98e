#!/usr/bin/env bash
# Benchmark of the log path (DESIGN §7): a container writes a finite log of
# CP_BENCH_LOG_LINES lines of 80 bytes (default 2.5 M lines = 200 MB) with
# busybox `yes | head`; it is then read back, timestamps on, by
#   baselines: curl on the Engine API into /dev/null; `docker logs -t`
#   cpdocker:  `cpdocker logs` (text), `cpdocker --json logs`, and the Lua
#              API (provider:logs():next(), one table per line)
# and, offline on the captured stream, by the C demultiplexer alone and
# through its Lua bindings. Prints seconds, MB/s and ratios against the
# baselines of this run. The container and the capture are removed at the end.
#   CP_BENCH_LOG_LINES=250000 bash spec/bench/bench_logs.sh   (a quick run)
set -euo pipefail
cd "$(dirname "$0")/../.."
LINES=${CP_BENCH_LOG_LINES:-2500000}
REPEAT=${CP_BENCH_REPEAT:-2}
SOCK=/var/run/docker.sock
OUT=spec/bench/out
mkdir -p "$OUT" build/bench
id="bench$(date +%s)$$"
name="cp-$id-web"
capture="$OUT/logs-$id.bin"
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  rm -f "$capture"
}
trap cleanup EXIT
calc() { awk "BEGIN { printf \"%.6f\", $* }"; } # arithmetic without bc
export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/?.so;;"
. spec/bench/lib.sh

cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -o build/bench/demux_bench spec/bench/demux_bench.c runtime/demux.c

line=$(printf '%079d' 0 | tr 0 a) # 79 characters + "\n"
echo "bench_logs: writing $LINES lines of 80 bytes ($((LINES * 80 / 1000000)) MB) into a container log"
docker create --name "$name" --label "ctrlplane.project=cp-$id" --label "ctrlplane.instance=$id" \
  --label ctrlplane.service=web --label ctrlplane.role=main --label ctrlplane.test=bench \
  --network none cpdocker-test/busybox:1 sh -c "yes $line | head -n $LINES" >/dev/null
t0=$(date +%s.%N)
docker start "$name" >/dev/null
timeout 600 docker wait "$name" >/dev/null
echo "bench_logs: log written in $(calc "$(date +%s.%N) - $t0") s"

API="http://localhost/v1.41/containers/$name/logs?stdout=1&stderr=1&timestamps=1"
curl -sf --unix-socket "$SOCK" "$API" -o "$capture"
size=$(stat -c %s "$capture")

# best of REPEAT runs of a command (output discarded): "wall-seconds cpu-seconds"
# (cpu = user + system of the command itself, "-" without /usr/bin/time)
best() {
  local b="" bcpu="-" tf
  tf=$(mktemp)
  for _ in $(seq 1 "$REPEAT"); do
    local s e t c="-"
    s=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
      /usr/bin/time -f "%U %S" -o "$tf" "$@" >/dev/null 2>&1
      c=$(awk 'END { printf "%.2f", $1 + $2 }' "$tf")
    else
      "$@" >/dev/null 2>&1
    fi
    e=$(date +%s.%N)
    t=$(calc "$e - $s")
    if [ -z "$b" ] || [ "$(calc "$t < $b")" != 0.000000 ]; then b=$t bcpu=$c; fi
  done
  rm -f "$tf"
  echo "$b $bcpu"
}
row() { # name seconds baseline-seconds [note]
  printf '  %-32s %7.2f s %8.1f MB/s  %5.2fx %s\n' "$1" "$2" "$(calc "$size / $2 / 1000000")" \
    "$(calc "$2 / $3")" "${4:-}"
}

echo "bench_logs: stream of $size bytes (timestamps on); best of $REPEAT runs"
read -r t_curl c_curl < <(best curl -sf --unix-socket "$SOCK" "$API" -o /dev/null)
read -r t_docker c_docker < <(best docker logs -t "$name")
read -r t_text c_text < <(best ./cpdocker logs "$id")
read -r t_json c_json < <(best ./cpdocker --json logs "$id")
read -r _ api_events t_api < <(lua5.4 spec/bench/logs_bench.lua api "$id")
echo "end to end (ratio: time / curl into /dev/null; cpu: user+system of the client)"
row "curl (baseline)" "$t_curl" "$t_curl" "cpu $c_curl s"
row "docker logs -t" "$t_docker" "$t_curl" "cpu $c_docker s"
row "cpdocker logs" "$t_text" "$t_curl" "cpu $c_text s; $(printf '%.2f' "$(calc "$t_text / $t_docker")")x docker logs"
row "cpdocker --json logs" "$t_json" "$t_curl" "cpu $c_json s; $(printf '%.2f' "$(calc "$t_json / $t_docker")")x docker logs"
row "Lua API, table per line" "$t_api" "$t_curl" "$api_events events"

read -r _ c_events t_c < <(./build/bench/demux_bench "$capture" plain 3)
read -r _ cj_events t_cj < <(./build/bench/demux_bench "$capture" json 3)
read -r _ lt_events t_lt < <(lua5.4 spec/bench/logs_bench.lua offline "$capture" tables)
read -r _ lj_events t_lj < <(lua5.4 spec/bench/logs_bench.lua offline "$capture" json)
go_ref=$(calc "$size / 150000000") # the reference Go demux: ~150 MB/s (DESIGN §7)
echo "offline on the captured stream (ratio: time / the Go reference demux at 150 MB/s)"
row "C demux, events counted" "$t_c" "$go_ref" "$c_events events"
row "C demux + JSON lines" "$t_cj" "$go_ref" "$cj_events events"
row "core.demux feed, Lua tables" "$t_lt" "$go_ref" "$lt_events events"
row "core.demux render, JSON lines" "$t_lj" "$go_ref" "$lj_events events"

# peak resident memory of the client over the whole log
rss_kb="-"
if [ -x /usr/bin/time ]; then
  rss_kb=$( { /usr/bin/time -f "%M" ./cpdocker --json logs "$id" >/dev/null; } 2>&1 | tail -1)
  echo "peak RSS of cpdocker --json logs over the whole log: $(calc "$rss_kb / 1024") MB"
fi

verdict() { [ "$(calc "($1)")" != 0.000000 ] && echo ok || echo MISSED; }
echo "targets"
echo "  C demux + JSON >= 1 GB/s: $(calc "$size / $t_cj / 1e9") GB/s ($(verdict "$size / $t_cj >= 1e9"))"
echo "  cpdocker --json logs <= 1.05x curl: $(calc "$t_json / $t_curl")x ($(verdict "$t_json <= 1.05 * $t_curl"))"
echo "  cpdocker --json logs faster than docker logs: $(calc "$t_json / $t_docker")x ($(verdict "$t_json < $t_docker"))"
[ "$rss_kb" != "-" ] && echo "  peak RSS < 16 MB: $(calc "$rss_kb / 1024") MB ($(verdict "$rss_kb < 16384"))"

mb=$(bench_calc "$size / 1000000")
bench_row "cpdocker --json logs (${mb%.*} MB)" "curl into /dev/null" "$t_curl" "$t_json" 1.05
bench_row "cpdocker --json logs (${mb%.*} MB)" "docker logs -t" "$t_docker" "$t_json" 1.00
bench_row "C demux + JSON lines, offline" "Go reference demux, 150 MB/s" "$go_ref" "$t_cj" 0.15

fail=0
for n in "$api_events" "$c_events" "$cj_events" "$lt_events" "$lj_events"; do
  [ "$n" = "$LINES" ] || { echo "bench_logs: expected $LINES events, got $n"; fail=1; }
done
exit $fail
