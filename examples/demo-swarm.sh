#!/usr/bin/env bash
# The demo behind `make demo-swarm`: bring up a 3-node swarm on this machine
# (spec/support/swarm_lab.sh: three dockerd nodes in their own namespaces),
# run the same demo as `make demo` against it with the swarm backend, show
# where the tasks run, and take the lab down again.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=spec/support/swarm_lab.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
trap 'bash $LAB down' EXIT

step "swarm_lab.sh up 3"
bash $LAB up 3
export CP_DOCKER_BACKEND=swarm
CP_DOCKER_HOST=$(bash $LAB sock 1)
CP_DOCKER_NODES=$(bash $LAB nodes)
export CP_DOCKER_HOST CP_DOCKER_NODES
echo "CP_DOCKER_BACKEND=swarm"
echo "CP_DOCKER_HOST=$CP_DOCKER_HOST"
echo "CP_DOCKER_NODES=$CP_DOCKER_NODES"
docker -H "$CP_DOCKER_HOST" node ls

# the demo leaves the instance up at the end when asked, to look at its tasks
DEMO_KEEP=1 bash examples/demo.sh
ID=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' examples/project.json | head -1)
step "where the tasks run (docker service ps on the manager)"
docker -H "$CP_DOCKER_HOST" service ps --format '{{.Name}} {{.Node}} {{.CurrentState}}' \
  "cp-$ID-web" "cp-$ID-logger" 2>/dev/null || true
step "cpdocker deprovision $ID"
./cpdocker deprovision "$ID"
./cpdocker status "$ID"
