#!/usr/bin/env bash
# Provision and deprovision of the 3-service example (an init that sleeps
# 0.2 s, a web server, a sidecar), side by side with the same project done by
# the docker CLI and by docker-compose. Medians of ROUNDS interleaved runs.
# Targets: provision <= 1.1x the CLI sequence and <= 0.8x `docker-compose up -d`;
# deprovision <= 1.0x `docker rm -f` + `docker network rm`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-7}
command -v docker-compose >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
IMG=cpdocker-test/busybox:1
ID=inst_bench_lifecycle
WEB_CMD="trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
LOG_CMD='trap '"'"'exit 0'"'"' TERM; while true; do sleep 1 & wait $!; done'
work=$(mktemp -d)
trap 'rm -rf "$work"; ./cpdocker deprovision $ID >/dev/null 2>&1 || true; docker rm -f b-cli-init b-cli-web b-cli-logger >/dev/null 2>&1 || true; docker network rm b-cli-net >/dev/null 2>&1 || true; (cd "$work" 2>/dev/null && docker-compose -p bcompose down -v >/dev/null 2>&1) || true' EXIT

cat >"$work/docker-compose.yml" <<YAML
version: "2.4"
services:
  init:
    image: $IMG
    command: ["sh", "-c", "sleep 0.2"]
  web:
    image: $IMG
    command: ["sh", "-c", "$WEB_CMD"]
    ports: ["127.0.0.1::8080"]
    restart: unless-stopped
    depends_on:
      init:
        condition: service_completed_successfully
  logger:
    image: $IMG
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait \$\$!; done"]
    restart: unless-stopped
    depends_on: [web]
YAML

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

cli_up() {
  docker network create --label ctrlplane.bench=1 b-cli-net >/dev/null
  docker run -d --name b-cli-init --network b-cli-net --label ctrlplane.bench=1 $IMG sh -c 'sleep 0.2' >/dev/null
  [ "$(docker wait b-cli-init)" = 0 ]
  docker run -d --name b-cli-web --network b-cli-net --network-alias web --restart unless-stopped \
    -p 127.0.0.1::8080 --label ctrlplane.bench=1 $IMG sh -c "$WEB_CMD" >/dev/null
  docker run -d --name b-cli-logger --network b-cli-net --network-alias logger --restart unless-stopped \
    --label ctrlplane.bench=1 $IMG sh -c "$LOG_CMD" >/dev/null
}
cli_down() {
  docker rm -f b-cli-init b-cli-web b-cli-logger >/dev/null
  docker network rm b-cli-net >/dev/null
}
cp_up() { ./cpdocker provision spec/bench/lifecycle.json >/dev/null 2>&1; }
cp_down() { ./cpdocker deprovision $ID >/dev/null; }
compose_up() { (cd "$work" && docker-compose -p bcompose up -d >/dev/null 2>&1); }
compose_down() { (cd "$work" && docker-compose -p bcompose down -v >/dev/null 2>&1); }

declare -A T
for r in $(seq 1 "$ROUNDS"); do
  for tool in cp cli compose; do
    t0=$(now); ${tool}_up; t1=$(now)
    sleep 0.3
    t2=$(now); ${tool}_down; t3=$(now)
    T[$tool.up]+="$(elapsed "$t0" "$t1") "
    T[$tool.down]+="$(elapsed "$t2" "$t3") "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A M
for k in "${!T[@]}"; do M[$k]=$(echo "${T[$k]}" | median); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t) ? "ok" : "MISSED" }'; }

echo "lifecycle: 3-service project, median of $ROUNDS rounds (seconds)"
printf '  %-12s %8s %8s %8s\n' "" cpdocker "docker" compose
printf '  %-12s %8s %8s %8s\n' provision "${M[cp.up]}" "${M[cli.up]}" "${M[compose.up]}"
printf '  %-12s %8s %8s %8s\n' deprovision "${M[cp.down]}" "${M[cli.down]}" "${M[compose.down]}"
r1=$(ratio "${M[cp.up]}" "${M[cli.up]}"); r2=$(ratio "${M[cp.up]}" "${M[compose.up]}")
r3=$(ratio "${M[cp.down]}" "${M[cli.down]}")
echo "  provision   / docker CLI sequence      = $r1 (target <= 1.10: $(verdict "$r1" 1.10))"
echo "  provision   / docker-compose up -d     = $r2 (target <= 0.80: $(verdict "$r2" 0.80))"
echo "  deprovision / docker rm -f + network rm = $r3 (target <= 1.00: $(verdict "$r3" 1.00))"
