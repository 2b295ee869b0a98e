#!/usr/bin/env bash
# The API floor of bench_serve's phase 3 (issue 14): N provisions of the
# 2-service instance (web with a published port, a sidecar after it) done
# with curl, all at once: per instance a network, then create + start of
# web, then of the sidecar, then the readiness rule of a default provision
# (CP_DOCKER_START_GRACE after the last start, one inspect of each) -- the
# calls `cpdocker serve` makes for the same work, with nothing of its own.
# Prints the wall time in seconds; removes what it made.
#   bash spec/bench/serve_floor.sh N TAG [GRACE]
set -uo pipefail
N=$1 TAG=$2 GRACE=${3:-${CP_DOCKER_START_GRACE:-1.5}}
SOCK=/var/run/docker.sock API=http://localhost/v1.41 IMG=cpdocker-test/busybox:1
WEB="trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
SIDE='trap '"'"'exit 0'"'"' TERM; while true; do sleep 1 & wait $!; done'
work=$(mktemp -d)
api() { # METHOD PATH [BODY]
  curl -sf --unix-socket "$SOCK" -X "$1" -H 'Content-Type: application/json' \
    ${3:+--data-binary "$3"} "$API$2"
}
body() { # net alias cmd [port]
  jq -cn --arg img "$IMG" --arg net "$1" --arg alias "$2" --arg cmd "$3" --arg port "${4:-}" '{
    Image: $img, Entrypoint: ["sh", "-c", $cmd], Labels: {"ctrlplane.bench-floor": "1"},
    ExposedPorts: (if $port == "" then {} else {($port + "/tcp"): {}} end),
    HostConfig: {NetworkMode: $net, RestartPolicy: {Name: "unless-stopped"},
      PortBindings: (if $port == "" then {} else
        {($port + "/tcp"): [{HostIp: "127.0.0.1", HostPort: ""}]} end)},
    NetworkingConfig: {EndpointsConfig: {($net): {Aliases: [$alias]}}}}'
}
# the request bodies are made before the clock starts (jq is not the daemon's work)
for i in $(seq 1 "$N"); do
  net="bsf$TAG-$i-net"
  for try in 1 2 3 4 5 6; do
    jq -cn --arg n "$net" --arg s "10.214.$((RANDOM % 256)).0/24" \
      '{Name: $n, Driver: "bridge", CheckDuplicate: true, Labels: {"ctrlplane.bench-floor": "1"},
        IPAM: {Driver: "default", Config: [{Subnet: $s}]}}' >"$work/net$i.$try"
  done
  body "$net" web "$WEB" 8080 >"$work/web$i"
  body "$net" side "$SIDE" >"$work/side$i"
done
one() { # i: one instance, the calls in the runtime's order; exit 0 when ready
  local n="bsf$TAG-$1" try c
  for try in 1 2 3 4 5 6; do
    api POST /networks/create "@$work/net$1.$try" >/dev/null && break
  done
  api POST "/containers/create?name=$n-web" "@$work/web$1" >/dev/null || return 1
  api POST "/containers/$n-web/start" >/dev/null || return 1
  api POST "/containers/create?name=$n-side" "@$work/side$1" >/dev/null || return 1
  api POST "/containers/$n-side/start" >/dev/null || return 1
  sleep "$GRACE"
  for c in web side; do api GET "/containers/$n-$c/json" | grep -q '"Running":true' || return 1; done
}
t0=$(date +%s.%N)
pids=()
for i in $(seq 1 "$N"); do one "$i" & pids+=($!); done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
t1=$(date +%s.%N)
awk "BEGIN { printf \"%.6f %d\\n\", $t1 - $t0, $failed }"
docker ps -aq --filter label=ctrlplane.bench-floor=1 | xargs -r docker rm -f >/dev/null 2>&1
docker network ls -q --filter label=ctrlplane.bench-floor=1 | xargs -r docker network rm >/dev/null 2>&1
rm -rf "$work"
