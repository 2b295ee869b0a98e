#!/usr/bin/env bash
# Soak (issue 8): SOAK_CYCLES (default 200) cycles of provision / deploy /
# status / resources / logs / deprovision in ONE runtime process, bounded by
# SOAK_MAX_SECONDS; prints ops/s, per-operation medians and RSS every 10
# cycles (flat after warm-up is the target). Then a shorter run
# (SOAK_VALGRIND_CYCLES, default 5; 0 skips it) under valgrind: the target
# is "definitely lost: 0 bytes" (errors on definite leaks fail the bench).
set -uo pipefail
cd "$(dirname "$0")/../.."
CYCLES=${SOAK_CYCLES:-200}
MAX=${SOAK_MAX_SECONDS:-1800}
VG=${SOAK_VALGRIND_CYCLES:-5}
status=0
timeout $((MAX + 120)) lua5.4 spec/bench/soak.lua "$CYCLES" "$MAX" || status=1
if [ "$VG" -gt 0 ]; then
  command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
  log=$(mktemp)
  timeout 900 valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
    --log-file="$log" lua5.4 spec/bench/soak.lua "$VG" 600 | sed 's/^/  valgrind run: /'
  rc=${PIPESTATUS[0]}
  echo "  valgrind ($VG cycles): $(grep -E 'definitely lost|ERROR SUMMARY' "$log" | sed 's/^==[0-9]*== *//' | tr '\n' ' ')"
  [ "$rc" = 0 ] || { echo "  valgrind exit $rc: see above"; status=1; }
  rm -f "$log"
fi
exit $status
