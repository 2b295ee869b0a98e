#!/usr/bin/env bash
# The demo behind `make demo`: the provider's identity, the daemon it talks
# to and its health, as an operator would check them with ./cpdocker.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cpdocker version"
./cpdocker version
step "cpdocker info"
./cpdocker info
step "cpdocker --json health"
./cpdocker --json health
step "cpdocker capabilities"
./cpdocker capabilities
