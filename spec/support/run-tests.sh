#!/usr/bin/env bash
# Runs the spec suite with busted on Lua 5.4. The last line printed is
# "N passed, N failed"; the exit status is non-zero when anything failed.
#   run-tests.sh           unit and integration specs (needs a Docker daemon)
#   run-tests.sh --unit    only the specs that need no daemon
set -uo pipefail
cd "$(dirname "$0")/../.."
run=default
[ "${1:-}" = "--unit" ] && run=unit
log=$(mktemp)
# CP_CORE_CPATH points the specs at another build of the C core (make asan)
extra=()
[ -n "${CP_CORE_CPATH:-}" ] && extra+=(--cpath="$CP_CORE_CPATH")
# CP_BUSTED_LUA runs busted in another interpreter (make asan-all)
busted --lua="${CP_BUSTED_LUA:-lua5.4}" --run="$run" "${extra[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
rm -f "$log"
if [ -z "$summary" ]; then
  echo "busted ended without a summary (exit $status)"
  echo "0 passed, 1 failed"
  exit 1
fi
case "$summary" in
  *" 0 failed"*) [ "$status" = 0 ] || { echo "busted exited $status"; echo "0 passed, 1 failed"; exit 1; } ;;
  *) exit 1 ;;
esac
exit 0
