#!/usr/bin/env bash
# Provision and deprovision of the 3-service example (an init that sleeps
# 0.2 s, a web server, a sidecar), side by side with
#   floor:   the same Docker API calls the provision needs (network create;
#            per wave: create, start; the init's wait), issued with curl in
#            the same dependency order and parallelism; for deprovision the
#            removals (in parallel) and the network's;
#   floor + grace: the floor, then the readiness rule a default provision
#            keeps (#12: a service without a health check must still be
#            running CP_DOCKER_START_GRACE, 1.5 s, after its start): a sleep
#            of the grace after the last start and one inspect of each
#            service -- the least any client enforcing that rule must do;
#   docker:  the same project done by the docker CLI;
#   compose: docker-compose up -d / down -v.
# Medians of ROUNDS interleaved runs (a deprovision: of 2 x ROUNDS, pooled). Targets: provision <= 1.15x the floor
# (grace 0 against the floor, the default against floor + grace), <= 1.1x
# the CLI sequence and <= 0.8x `docker-compose up -d` (grace 0: ready once
# running, as `docker run -d` and `up -d` take it); deprovision
# <= 1.15x its floor and <= 1.0x `docker rm -f` + `docker network rm`.
# Then one traced provision (CP_DOCKER_TRACE=1): where the time goes.
set -euo pipefail
cd "$(dirname "$0")/../.."
. spec/bench/lib.sh
ROUNDS=${ROUNDS:-7}
command -v docker-compose >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
IMG=cpdocker-test/busybox:1
ID=inst_bench_lifecycle
SOCK=/var/run/docker.sock
API=http://localhost/v1.41
WEB_CMD="trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
LOG_CMD='trap '"'"'exit 0'"'"' TERM; while true; do sleep 1 & wait $!; done'
work=$(mktemp -d)
cleanup() {
  ./cpdocker deprovision $ID >/dev/null 2>&1 || true
  docker rm -f b-cli-init b-cli-web b-cli-logger b-floor-init b-floor-web b-floor-logger >/dev/null 2>&1 || true
  docker network rm b-cli-net b-floor-net >/dev/null 2>&1 || true
  (cd "$work" 2>/dev/null && docker-compose -p bcompose down -v >/dev/null 2>&1) || true
  rm -rf "$work"
}
trap cleanup EXIT

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

# the floor's request bodies: what the runtime sends, less its bookkeeping labels
body() { # name alias restart cmd [port]
  jq -n --arg img "$IMG" --arg alias "$2" --arg restart "$3" --arg cmd "$4" --arg port "${5:-}" '{
    Image: $img, Entrypoint: ["sh", "-c", $cmd], Labels: {"ctrlplane.bench": "1"},
    ExposedPorts: (if $port == "" then {} else {($port + "/tcp"): {}} end),
    HostConfig: {NetworkMode: "b-floor-net", RestartPolicy: {Name: $restart},
      PortBindings: (if $port == "" then {} else
        {($port + "/tcp"): [{HostIp: "127.0.0.1", HostPort: ""}]} end)},
    NetworkingConfig: {EndpointsConfig: {"b-floor-net": {Aliases: [$alias]}}}}' >"$work/$1.json"
}
body init init no "sleep 0.2"
body web web unless-stopped "$WEB_CMD" 8080
body logger logger unless-stopped "$LOG_CMD"
api() { # METHOD PATH [BODYFILE]
  curl -sf --unix-socket "$SOCK" -X "$1" -H 'Content-Type: application/json' \
    ${3:+--data-binary "@$3"} "$API$2"
}
floor_up() {
  # an explicit /24 of the runtime's pool, as the runtime sends (another on an overlap)
  local i
  for i in 1 2 3 4 5 6; do
    jq --arg s "10.213.$((RANDOM % 256)).0/24" '. + {IPAM: {Driver: "default", Config: [{Subnet: $s}]}}' \
      "$work/net.json" >"$work/net-try.json"
    api POST /networks/create "$work/net-try.json" >/dev/null && break
  done
  api POST "/containers/create?name=b-floor-init" "$work/init.json" >/dev/null
  api POST /containers/b-floor-init/start >/dev/null
  api POST "/containers/b-floor-init/wait?condition=not-running" | grep -q '"StatusCode":0'
  api POST "/containers/create?name=b-floor-web" "$work/web.json" >/dev/null
  api POST /containers/b-floor-web/start >/dev/null
  api POST "/containers/create?name=b-floor-logger" "$work/logger.json" >/dev/null
  api POST /containers/b-floor-logger/start >/dev/null
}
GRACE=${CP_DOCKER_START_GRACE:-1.5}
floorg_up() {
  floor_up
  sleep "$GRACE"
  local c
  for c in b-floor-web b-floor-logger; do
    api GET "/containers/$c/json" | grep -q '"Running":true'
  done
}
floorg_down() { floor_down; }
floor_down() {
  local pids=()
  for c in b-floor-init b-floor-web b-floor-logger; do
    api DELETE "/containers/$c?force=true&v=true" >/dev/null & pids+=($!)
  done
  wait "${pids[@]}"
  api DELETE /networks/b-floor-net >/dev/null
}
echo '{"Name": "b-floor-net", "Driver": "bridge", "CheckDuplicate": true, "Labels": {"ctrlplane.bench": "1"}}' \
  >"$work/net.json"

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
# the same with the readiness grace off: a service without a health check is
# ready once running, as the floor (and the docker CLI) take it
cp0_up() { CP_DOCKER_START_GRACE=0 ./cpdocker provision spec/bench/lifecycle.json >/dev/null 2>&1; }
cp0_down() { cp_down; }
compose_up() { (cd "$work" && docker-compose -p bcompose up -d >/dev/null 2>&1); }
compose_down() { (cd "$work" && docker-compose -p bcompose down -v >/dev/null 2>&1); }

declare -A T
for r in $(seq 1 "$ROUNDS"); do
  for tool in cp cp0 floor floorg cli compose; do
    t0=$(bench_now); ${tool}_up; t1=$(bench_now)
    sleep 0.3
    t2=$(bench_now); ${tool}_down; t3=$(bench_now)
    T[$tool.up]+="$(bench_calc "$t1 - $t0") "
    T[$tool.down]+="$(bench_calc "$t3 - $t2") "
  done
done

declare -A M
for k in "${!T[@]}"; do M[$k]=$(echo "${T[$k]}" | bench_median); done
# the deprovision after either provision is the same work (and so is either
# floor's): their rounds are pooled, twice the samples of a noisy figure
M[cpall.down]=$(echo "${T[cp.down]} ${T[cp0.down]}" | bench_median)
M[floorall.down]=$(echo "${T[floor.down]} ${T[floorg.down]}" | bench_median)
echo "lifecycle: 3-service project, every round (seconds)"
for k in $(echo "${!T[@]}" | tr ' ' '\n' | sort); do printf '  %-14s %s\n' "$k" "${T[$k]}"; done
echo "lifecycle: 3-service project, median of $ROUNDS rounds (seconds)"
printf '  %-12s %8s %8s %8s %8s %8s %8s\n' "" cpdocker "grace 0" "floor" "fl+grace" "docker" compose
printf '  %-12s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n' provision "${M[cp.up]}" "${M[cp0.up]}" "${M[floor.up]}" \
  "${M[floorg.up]}" "${M[cli.up]}" "${M[compose.up]}"
printf '  %-12s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n' deprovision "${M[cp.down]}" "${M[cp0.down]}" \
  "${M[floor.down]}" "${M[floorg.down]}" "${M[cli.down]}" "${M[compose.down]}"
echo "  (cpdocker: readiness grace ${CP_DOCKER_START_GRACE:-1.5} s by default: a service without a health"
echo "   check must stay up that long; grace 0: ready once running, as the floor and the CLI)"
bench_row "provision 3 services (cpdocker, grace ${GRACE} s)" "API floor + same grace (curl)" \
  "${M[floorg.up]}" "${M[cp.up]}" 1.15
bench_row "provision 3 services, grace 0" "API floor (curl)" "${M[floor.up]}" "${M[cp0.up]}" 1.15
bench_row "  default provision (ref.)" "API floor, no grace (curl)" "${M[floor.up]}" "${M[cp.up]}" -
bench_row "provision 3 services, grace 0" "docker CLI sequence" "${M[cli.up]}" "${M[cp0.up]}" 1.10
bench_row "provision 3 services, grace 0" "docker-compose up -d" "${M[compose.up]}" "${M[cp0.up]}" 0.80
bench_row "deprovision 3 services (cpdocker)" "API floor (curl)" "${M[floorall.down]}" "${M[cpall.down]}" 1.15
bench_row "deprovision 3 services (cpdocker)" "docker rm -f + network rm" "${M[cli.down]}" "${M[cpall.down]}" 1.00

echo "one traced provision (CP_DOCKER_TRACE=1):"
CP_DOCKER_TRACE=1 ./cpdocker provision spec/bench/lifecycle.json 2>&1 >/dev/null | grep '^trace' | sed 's/^/  /'
./cpdocker deprovision $ID >/dev/null
