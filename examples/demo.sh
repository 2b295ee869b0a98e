#!/usr/bin/env bash
# The demo behind `make demo`: provision the example project (an init that
# prepares a volume, a web server, a sidecar), look at it, fetch the web
# endpoint over 127.0.0.1, deploy the second image version, look again, read
# the logs, exec in the web server, sample its resources, scale it, roll back
# and deprovision — all through ./cpdocker, as an operator would.
set -euo pipefail
cd "$(dirname "$0")/.."
ID=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' examples/project.json | head -1)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { ./cpdocker deprovision "$ID" >/dev/null 2>&1 || true; }
# the first public endpoint of the web service, from `status --json`
web_url() {
  ./cpdocker --json status "$ID" | lua5.4 -e '
    local cjson = require("cjson")
    for _, e in ipairs(cjson.decode(io.read("a")).endpoints) do
      if e.public and e.service_name == "web" then print(e.url) break end
    end'
}
trap cleanup EXIT

step "cpdocker version"
./cpdocker version
step "cpdocker --json health"
./cpdocker --json health

step "cpdocker provision examples/project.json"
./cpdocker provision examples/project.json
step "cpdocker status $ID"
./cpdocker status "$ID"

url=$(web_url)
step "fetch the web endpoint: $url (published on 127.0.0.1; on a swarm, a node address)"
curl -fsS "${url/localhost/127.0.0.1}/"

step "cpdocker deploy examples/deploy.json (image :2, new env)"
./cpdocker deploy examples/deploy.json
step "cpdocker status $ID"
./cpdocker status "$ID"
url=$(web_url)
step "fetch the web endpoint again: $url"
curl -fsS "${url/localhost/127.0.0.1}/"

step "cpdocker logs $ID --all --tail 3"
./cpdocker logs "$ID" --all --tail 3
step "cpdocker exec $ID -- cat /VERSION"
./cpdocker exec "$ID" -- cat /VERSION
step "cpdocker resources $ID"
./cpdocker resources "$ID"
step "cpdocker scale $ID --replicas 2, then status"
./cpdocker scale "$ID" --replicas 2
./cpdocker status "$ID"
step "cpdocker rollback $ID initial"
./cpdocker rollback "$ID" initial
url=$(web_url)
step "fetch the web endpoint after the rollback: $url"
curl -fsS "${url/localhost/127.0.0.1}/"

# DEMO_KEEP=1 (make demo-swarm) leaves the instance for the caller to show and remove
[ -n "${DEMO_KEEP:-}" ] && { trap - EXIT; exit 0; }
step "cpdocker deprovision $ID"
./cpdocker deprovision "$ID"
trap - EXIT
./cpdocker status "$ID"
