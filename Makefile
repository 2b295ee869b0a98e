# ctrlplane-docker: build, setup, test, demo, bench.
#   make            build ./cpdocker and the Lua C module
#   make test       set up (packages, dockerd, test images) and run every spec
#   make demo       set up and run the example end to end
#   make demo-swarm the same on a 3-node swarm lab (the swarm backend)
#   make bench      benchmarks, printing ratios against baselines run alongside
PREFIX ?= /usr/local
LUA    ?= lua5.4
CC     ?= cc
PKGS    = lua5.4 libcurl
WARN    = -Wall -Wextra -Wshadow -Wconversion -Wstrict-prototypes -Wmissing-prototypes \
          -Wpointer-arith -Wformat=2 -Wundef
ifeq ($(WERROR),1)
WARN   += -Werror
endif
OPT    ?= -O2 -g
CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -fPIC $(OPT) $(WARN) \
          $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -DCP_PREFIX='"$(PREFIX)"'
SAN    ?=
CFLAGS += $(SAN)
LDFLAGS += $(SAN)
CURL_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
LUA_LIBS  = $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)

CORE_SRC = runtime/clock.c runtime/http.c runtime/lcore.c runtime/lsys.c runtime/demux.c runtime/ldemux.c
# stats parsing and formulas, the concurrent/persistent sampler, their Lua bindings
CORE_SRC += runtime/stats.c runtime/sampler.c runtime/lstats.c
# container usage read from the kernel (cgroup files, /proc) and its binding
CORE_SRC += runtime/cgroup.c runtime/lcgroup.c
# hijacked connections (exec with stdin)
CORE_SRC += runtime/lraw.c
# cross-process per-instance locks (flock) and their Lua binding
CORE_SRC += runtime/lock.c runtime/llock.c
BUILD   ?= build
CORE_OBJ = $(CORE_SRC:runtime/%.c=$(BUILD)/obj/%.o)
HDRS     = $(wildcard runtime/*.h)
MODULE   = $(BUILD)/ctrlplane/docker/core.so

LIB_OBJ  = $(CORE_OBJ) build/obj/host.o build/obj/embed.o
LIB_A    = build/libctrlplane-docker.a
LIB_SO   = build/libctrlplane-docker.so

.PHONY: all setup test unit demo demo-swarm bench check asan asan-all valgrind clean install fuzz

all: cpdocker $(MODULE) $(LIB_A) $(LIB_SO) build/embed-example build/http_faultd

$(BUILD)/obj/%.o: runtime/%.c $(HDRS) runtime/include/ctrlplane_docker.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iruntime/include -c -o $@ $<

cpdocker: build/obj/cpdocker.o build/obj/host.o $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(CURL_LIBS) -lm -ldl

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libctrlplane-docker.so.0 -o $@ $^ $(LUA_LIBS) $(CURL_LIBS) -lm -ldl

build/embed-example: examples/embed_example.c $(LIB_A) runtime/include/ctrlplane_docker.h
	$(CC) $(CFLAGS) -Iruntime/include -o $@ examples/embed_example.c $(LIB_A) \
	  $(LDFLAGS) $(LUA_LIBS) $(CURL_LIBS) -lm -ldl

# a misbehaving HTTP server on a unix socket, for the transport's fault specs
build/http_faultd: spec/support/http_faultd.c
	@mkdir -p build
	$(CC) -std=c11 -O1 -g $(WARN) -o $@ $<

$(MODULE): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(CURL_LIBS)

setup:
	@bash spec/support/setup.sh

test: setup
	@$(MAKE) --no-print-directory all
	@bash spec/support/run-tests.sh

# specs that need no daemon
unit: all
	@bash spec/support/run-tests.sh --unit

demo: setup
	@$(MAKE) --no-print-directory all
	@bash examples/demo.sh

# the same demo on a 3-node swarm on this machine (spec/support/swarm_lab.sh), torn down after
demo-swarm: setup
	@$(MAKE) --no-print-directory all
	@bash examples/demo-swarm.sh

bench: setup
	@$(MAKE) --no-print-directory all
	@bash spec/bench/run.sh

# libFuzzer on the demultiplexer (clang from Debian; installed when missing).
#   make fuzz FUZZ_TIME=600
FUZZ_TIME ?= 60
FUZZ_CC   ?= clang
FUZZ_MAXLEN ?= 8192
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { apt-get update -qq && apt-get install -y -qq clang >/dev/null; }
	@mkdir -p build/fuzz/corpus build/fuzz/seeds
	$(FUZZ_CC) $(FUZZ_FLAGS) -o build/fuzz/demux_fuzz spec/fuzz/demux_fuzz.c runtime/demux.c
	@for f in mux-ts:004 mux-plain:000 tty-ts:006 tty-plain:002 mux-ts:064 tty-ts:046; do \
	  printf "\\$${f#*:}\\005" | cat - spec/fixtures/logs-$${f%:*}.bin >build/fuzz/seeds/$${f%:*}-$${f#*:}; done
	./build/fuzz/demux_fuzz -max_total_time=$(FUZZ_TIME) -max_len=$(FUZZ_MAXLEN) -print_final_stats=1 \
	  build/fuzz/corpus build/fuzz/seeds

# quality gates: luacheck, cppcheck, and the unit specs against an
# ASan + UBSan build of the C core (in an instrumented interpreter, so no
# LD_PRELOAD reaches the shells and compilers the specs start)
check:
	luacheck --no-color -q lua scripts spec examples
	cppcheck --quiet --enable=warning,performance,portability --std=c11 --error-exitcode=1 \
	  --inline-suppr -Iruntime -Iruntime/include runtime examples/embed_example.c

ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g" SAN="$(ASAN_FLAGS)" \
	  build/asan/ctrlplane/docker/core.so build/asan/asan_lua
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  CP_CORE_CPATH="build/asan/?.so" CP_BUSTED_LUA="$$PWD/build/asan/asan_lua" \
	  bash spec/support/run-tests.sh --unit

# The whole suite (unit and integration) under ASan + UBSan: busted runs in
# an instrumented interpreter (spec/support/asan_lua.c) that loads the
# instrumented C core, and the specs' ./cpdocker is the instrumented host.
# Leaks are checked at the exit of every process (detect_leaks=1).
asan-all:
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g" SAN="$(ASAN_FLAGS)" \
	  build/asan/ctrlplane/docker/core.so build/asan/cpdocker build/asan/asan_lua
	@bash spec/support/asan-all.sh

# The transport's fault specs and the lock specs under valgrind (no
# definitely lost bytes, no memory errors): about a minute.
valgrind: all
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
	  lua5.4 /usr/bin/busted --ignore-lua spec/unit/http_faults_spec.lua spec/unit/lock_spec.lua

$(BUILD)/cpdocker: $(BUILD)/obj/cpdocker.o $(BUILD)/obj/host.o $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(CURL_LIBS) -lm -ldl

$(BUILD)/asan_lua: spec/support/asan_lua.c
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) $(LUA_LIBS) -lm -ldl

clean:
	rm -rf build cpdocker

# the executable, the library and its header, the Lua modules, the C module
# and the policy scripts; a pkg-config file; the Lua modules also where
# lua5.4 looks under PREFIX (share/lua/5.4, a link to the same files).
# Nothing depends on the PREFIX the objects were built with: the
# executable and the library find share/ctrlplane-docker beside themselves.
VERSION = $(shell sed -n 's/^\#define CP_VERSION "\(.*\)"/\1/p' runtime/lcore.h)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ctrlplane-docker \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/ctrlplane/docker $(DESTDIR)$(PREFIX)/share/lua/5.4
	install -m 755 cpdocker $(DESTDIR)$(PREFIX)/bin/cpdocker
	cp -r lua scripts $(DESTDIR)$(PREFIX)/share/ctrlplane-docker/
	ln -sfn ../../ctrlplane-docker/lua/ctrlplane $(DESTDIR)$(PREFIX)/share/lua/5.4/ctrlplane
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/libctrlplane-docker.so.0
	ln -sf libctrlplane-docker.so.0 $(DESTDIR)$(PREFIX)/lib/libctrlplane-docker.so
	install -m 644 runtime/include/ctrlplane_docker.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/5.4/ctrlplane/docker/core.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' runtime/ctrlplane-docker.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ctrlplane-docker.pc
