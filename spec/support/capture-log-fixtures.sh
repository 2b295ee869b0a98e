#!/usr/bin/env bash
# Captures the Docker log streams the demux specs replay offline
# (spec/fixtures/logs-*.bin). Runs one short-lived container per form
# (multiplexed, TTY), reads its logs through the Engine API on the unix
# socket exactly as the runtime does, and removes the containers again.
#   bash spec/support/capture-log-fixtures.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SOCK=/var/run/docker.sock
API=http://localhost/v1.41
OUT=spec/fixtures
IMAGE=cpdocker-test/busybox:1
id="fixture$(date +%s)$$"
# what the program writes: both streams, an empty line, a 40000-byte line
# (the json-file driver cuts it into 16 KiB pieces), bytes that are not
# UTF-8, characters JSON must escape, CRLF and a last line without "\n"
PROGRAM='printf "hello stdout\n"; printf "hello stderr\n" >&2; printf "\n";
head -c 40000 /dev/zero | tr "\000" x; printf "\n";
printf "bad \377\376 utf8 \303\251 ok\n"; printf "tab\there \"quote\" back\\\\slash\n";
printf "crlf\r\n"; printf "err line 2\n" >&2; printf "no newline at end"'

names=()
cleanup() { for n in "${names[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

capture() {
  local form=$1 tty=$2 name="cp-$id-$1"
  names+=("$name")
  curl -sf --unix-socket "$SOCK" -H 'Content-Type: application/json' \
    -d "{\"Image\":\"$IMAGE\",\"Tty\":$tty,\"HostConfig\":{\"NetworkMode\":\"none\"},\"Cmd\":[\"sh\",\"-c\",$(printf '%s' "$PROGRAM" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')],
         \"Labels\":{\"ctrlplane.project\":\"cp-$id\",\"ctrlplane.instance\":\"$id\",\"ctrlplane.service\":\"$form\",\"ctrlplane.role\":\"main\"}}" \
    "$API/containers/create?name=$name" >/dev/null
  curl -sf --unix-socket "$SOCK" -X POST "$API/containers/$name/start" >/dev/null
  curl -sf --unix-socket "$SOCK" -X POST "$API/containers/$name/wait" >/dev/null
  curl -sf --unix-socket "$SOCK" "$API/containers/$name/logs?stdout=1&stderr=1&timestamps=1" \
    -o "$OUT/logs-$form-ts.bin"
  curl -sf --unix-socket "$SOCK" "$API/containers/$name/logs?stdout=1&stderr=1" \
    -o "$OUT/logs-$form-plain.bin"
  echo "captured $OUT/logs-$form-ts.bin ($(stat -c %s "$OUT/logs-$form-ts.bin") bytes)"
}
capture mux false
capture tty true
