# ctrlplane-docker: build, setup, test, demo, bench.
#   make            build ./cpdocker and the Lua C module
#   make test       set up (packages, dockerd, test images) and run every spec
#   make demo       set up and run the example end to end
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

CORE_SRC = runtime/http.c runtime/lcore.c
# stats parsing and formulas, the concurrent/persistent sampler, their Lua bindings
CORE_SRC += runtime/stats.c runtime/sampler.c runtime/lstats.c
CORE_OBJ = $(CORE_SRC:runtime/%.c=build/obj/%.o)
HDRS     = $(wildcard runtime/*.h)
MODULE   = build/ctrlplane/docker/core.so

.PHONY: all setup test unit demo bench check clean install

all: cpdocker $(MODULE)

build/obj/%.o: runtime/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

cpdocker: build/obj/cpdocker.o $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(CURL_LIBS) -lm -ldl

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

bench: setup
	@$(MAKE) --no-print-directory all
	@bash spec/bench/run.sh

check:
	luacheck lua scripts spec examples

clean:
	rm -rf build cpdocker

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ctrlplane-docker
	install -m 755 cpdocker $(DESTDIR)$(PREFIX)/bin/cpdocker
	cp -r lua scripts $(DESTDIR)$(PREFIX)/share/ctrlplane-docker/
	install -d $(DESTDIR)$(PREFIX)/lib/lua/5.4/ctrlplane/docker
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/5.4/ctrlplane/docker/core.so
