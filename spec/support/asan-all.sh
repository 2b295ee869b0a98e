#!/usr/bin/env bash
# `make asan-all`: the whole spec suite with the instrumented interpreter,
# C core and cpdocker built by the Makefile under build/asan. The plain
# ./cpdocker is put back afterwards, whatever happens. Last line: "N passed,
# N failed" as run-tests.sh prints it.
set -uo pipefail
cd "$(dirname "$0")/../.."
for f in build/asan/asan_lua build/asan/cpdocker build/asan/ctrlplane/docker/core.so; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "asan-all: $f is missing (run make asan-all)"; exit 1; }
done
cp -p cpdocker build/cpdocker.plain
trap 'mv -f build/cpdocker.plain cpdocker' EXIT INT TERM
cp build/asan/cpdocker cpdocker
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export CP_CORE_CPATH="build/asan/?.so"
export CP_BUSTED_LUA="$PWD/build/asan/asan_lua"
bash spec/support/run-tests.sh "$@"
