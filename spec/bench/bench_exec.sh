#!/usr/bin/env bash
# Benchmark of exec streaming (issue #12 item 6): CP_BENCH_EXEC_MB megabytes
# (default 100) of random bytes
#   in and out:  through `cat` with stdin attached (checksums compared)
#   out only:    `head -c N /dev/zero` in the container, into /dev/null
# by the docker CLI (`docker exec -i`, the baseline) and by `cpdocker exec -i`,
# plus `cpdocker --json exec` (output capped at CP_DOCKER_EXEC_OUTPUT_MAX).
# Prints seconds, MB/s, peak RSS (with /usr/bin/time) and the ratio against
# the docker CLI of this run. The instance is deprovisioned at the end.
#   CP_BENCH_EXEC_MB=20 bash spec/bench/bench_exec.sh   (a quick run)
set -euo pipefail
cd "$(dirname "$0")/../.."
MB=${CP_BENCH_EXEC_MB:-100}
BYTES=$((MB * 1000000))
OUT=spec/bench/out
mkdir -p "$OUT"
id="inst_benchexec$(date +%s)$$"
input="$OUT/exec-$id.bin"
req="$OUT/exec-$id.json"
cleanup() {
  ./cpdocker deprovision "$id" >/dev/null 2>&1 || true
  rm -f "$input" "$req"
}
trap cleanup EXIT
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

cat > "$req" <<EOF
{"instance_id":"$id","tenant_id":"ten_bench","name":"exec bench","kind":"deployment",
 "services":[{"name":"app","image":"cpdocker-test/busybox:1",
   "command":["sh","-c","trap 'exit 0' TERM; while true; do sleep 1 & wait \$!; done"],
   "resources":{"cpu_millis":0,"memory_mb":0,"replicas":1}}]}
EOF
./cpdocker provision "$req" >/dev/null 2>&1
container="cp-$id-app"
head -c "$BYTES" /dev/urandom > "$input"
want=$(sha256sum < "$input" | cut -d' ' -f1)

TIME=""
[ -x /usr/bin/time ] && TIME="/usr/bin/time -f %M -o $OUT/exec-rss"
# run NAME COMMAND...: times the command (a shell snippet), prints a row
declare -A secs
run() {
  local name=$1 cmd=$2 t0 t1 rss="-"
  t0=$(date +%s.%N)
  eval "$cmd"
  t1=$(date +%s.%N)
  [ -n "$TIME" ] && rss="$(awk '{ printf "%.1f MiB", $1 / 1024 }' "$OUT/exec-rss")"
  secs[$name]=$(calc "$t1 - $t0")
  printf "  %-34s %7.2f s  %8.1f MB/s  peak RSS %s\n" "$name" "${secs[$name]}" \
    "$(calc "$MB / ${secs[$name]}")" "$rss"
}
check() { [ "$(cut -d' ' -f1 "$OUT/exec-sum")" = "$want" ] || { echo "bench_exec: $1: checksum differs"; exit 1; }; }

echo "bench_exec: $MB MB"
run "docker exec -i cat" "$TIME docker exec -i $container cat < $input | sha256sum > $OUT/exec-sum"
check "docker exec"
run "cpdocker exec -i cat" "$TIME ./cpdocker exec $id -i -- cat < $input | sha256sum > $OUT/exec-sum"
check "cpdocker exec"
run "docker exec (output only)" "$TIME docker exec $container head -c $BYTES /dev/zero > /dev/null"
run "cpdocker exec (output only)" "$TIME ./cpdocker exec $id -- head -c $BYTES /dev/zero > /dev/null"
run "cpdocker --json exec (capped)" "$TIME ./cpdocker --json exec $id -- head -c $BYTES /dev/zero > /dev/null"
rm -f "$OUT/exec-sum" "$OUT/exec-rss"
echo "  ratio cpdocker / docker CLI: in+out $(calc "${secs["cpdocker exec -i cat"]} / ${secs["docker exec -i cat"]}" | cut -c1-4)," \
  "output only $(calc "${secs["cpdocker exec (output only)"]} / ${secs["docker exec (output only)"]}" | cut -c1-4)"
. spec/bench/lib.sh
bench_row "cpdocker exec -i cat, $MB MB in and out" "docker exec -i" "${secs["docker exec -i cat"]}" \
  "${secs["cpdocker exec -i cat"]}" -
bench_row "cpdocker exec, $MB MB of output" "docker exec" "${secs["docker exec (output only)"]}" \
  "${secs["cpdocker exec (output only)"]}" -
