# mnistd — see README.md. `make run` and `make test` do everything on a fresh
# Debian machine (deps, data, build).

CC      ?= cc
BUILD   ?= build
PKGS    := libmicrohttpd libcjson libuv zlib sqlite3 spng libsystemd libprotobuf-c libarchive nettle
# oneDNN ships no .pc file: Debian's libdnnl-dev, OpenMP runtime (libgomp,
# whose omp_set_num_threads the core calls to size the team per thread).
DNNL_LIBS := -ldnnl -lgomp
OPT     ?= -O2
SAN     ?=
CFLAGS  ?=
LDFLAGS += $(SAN)
CFLAGS  += $(SAN) -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -Icore -Iserver \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(DNNL_LIBS) -lpthread -lm
TEST_LDLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)
# The hot element-wise loops in core/ are written to vectorise; let them.
CORE_CFLAGS := -ftree-vectorize -fno-math-errno -fopenmp-simd

CORE_SRC := $(wildcard core/*.c)
SRV_SRC  := $(filter-out server/main.c,$(wildcard server/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
SRV_OBJ  := $(SRV_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/srv_assets_data.o \
            $(BUILD)/obj/gen/onnx.pb-c.o
LIB_OBJ  := $(CORE_OBJ) $(SRV_OBJ)

# The web page is built into the binary: every file under web/, and the
# chart library from npm (node_modules/uplot, installed by `make deps`).
WEB_FILES := $(shell find web -type f 2>/dev/null | LC_ALL=C sort)
# Not a wildcard: a build without them would serve a page with no charts
# (and console errors), so a missing file stops the build and says why.
VENDOR    := node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
# System tests (tests/README.md): tests/system/test_*.sh, and any
# tests/test_*.sh still in the old place (a branch that added one before the
# move keeps working after a merge). The opt-in batteries below need root,
# podman, nginx or many minutes and have their own targets.
OPT_IN_TESTS := $(addprefix tests/system/test_,faults.sh load.sh valgrind.sh docker.sh systemd.sh tsan.sh \
                  replicas.sh kube.sh)
SH_TESTS := $(filter-out $(OPT_IN_TESTS),$(sort $(wildcard tests/system/test_*.sh tests/test_*.sh)))
BENCHES  := $(BUILD)/bench/bench_core

DATA_DIR ?= data
STAMP_DEPS := $(BUILD)/.deps-ok

.PHONY: all deps data run test unit asan bench clean distclean check-deps install test-docker test-systemd \
        fuzz reliability valgrind help tsan test-replicas test-kube
.SECONDARY:
all: $(BUILD)/mnistd ## build build/mnistd (-Werror); needs `make deps` once

# Every target with a `## ` comment, one line each.
help: ## this list
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## /{printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install missing Debian and npm packages (scripts/deps.sh)
	@scripts/deps.sh

# Build targets only verify that the libraries are there, so a plain `make`
# never runs apt-get behind the user's back; `make run`/`make test` do.
check-deps: ## check that the build's libraries are installed (what `make` runs first)
	@pkg-config --exists $(PKGS) cmocka || { echo "missing libraries: run 'make deps'" >&2; exit 1; }
	@test -f /usr/include/oneapi/dnnl/dnnl.h || { echo "missing oneDNN (libdnnl-dev): run 'make deps'" >&2; exit 1; }

data: ## fetch MNIST into data/ (Fashion-MNIST from Debian)
	@scripts/fetch-data.sh $(DATA_DIR)

# Every object records the headers it includes in a .d file beside it
# (-MMD; -MP adds an empty rule per header, so deleting one is no error).
DEPFLAGS := -MMD -MP
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

$(BUILD)/obj/core/%.o: core/%.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/obj/server/%.o: server/%.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tools/embed: scripts/embed.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror $< -o $@

$(BUILD)/gen/srv_assets_data.c: $(BUILD)/tools/embed $(WEB_FILES) $(VENDOR) Makefile
	@mkdir -p $(dir $@)
	$(BUILD)/tools/embed $@ $(foreach f,$(WEB_FILES),$(patsubst web/%,/%,$(f))=$(f)) \
	  $(foreach f,$(VENDOR),/vendor/$(notdir $(f))=$(f))

$(VENDOR):
	@echo "make: $@ is missing: the web page's chart library (uPlot) comes from npm." >&2; \
	 echo "      Run 'make deps' (or 'npm ci') first, then 'make' again." >&2; exit 1

# core/nn.h opens with a usage example; tests/test_nn_example.c compiles
# that text, cut out of the comment (the lines from its #include to the
# closing brace, without the comment's indent).
$(BUILD)/gen/nn_example.c: core/nn.h
	@mkdir -p $(dir $@)
	sed -n '/^ \*     #include "nn.h"/,/^ \*     }$$/s/^ \*\( \{5\}\)\{0,1\}//p' $< > $@
$(BUILD)/obj/tests/test_nn_example.o: $(BUILD)/gen/nn_example.c
$(BUILD)/obj/tests/test_nn_example.o: CFLAGS += -I$(BUILD)/gen

# ONNX export (server/srv_onnx.c) writes its protobuf with protobuf-c, from
# the onnx.proto that Debian's libonnx-dev ships; the C code is generated
# here at build time and never committed.
ONNX_PROTO ?= /usr/include/onnx/onnx.proto
$(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h &: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	@command -v protoc-c >/dev/null || { echo "protoc-c missing: run 'make deps'" >&2; exit 1; }
	protoc-c --c_out=$(BUILD)/gen -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)
$(BUILD)/obj/server/srv_onnx.o $(BUILD)/obj/tests/test_onnx_units.o: $(BUILD)/gen/onnx.pb-c.h
$(BUILD)/obj/server/srv_onnx.o $(BUILD)/obj/tests/test_onnx_units.o: CFLAGS += -I$(BUILD)/gen

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/mnistd: $(BUILD)/obj/server/main.o $(LIB_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS) $(TEST_LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# Unit and integration tests against an already-built tree.
unit: $(BUILD)/mnistd $(TESTS) ## unit tests and system tests (not the opt-in batteries) against the built tree
	@MNISTD_DATA=$(DATA_DIR) MNISTD_BIN=$(BUILD)/mnistd tests/run.sh $(TESTS) $(SH_TESTS)

test: deps data ## deps, data, build, then `make unit`
	@$(MAKE) --no-print-directory unit

asan: deps data ## the tests (browser and cookbook excepted) under ASan + UBSan, in build/asan
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  SH_TESTS="$(filter-out tests/system/test_browser.sh tests/system/test_cookbook.sh,$(SH_TESTS))" unit

# ThreadSanitizer: the server units, then the daemon through its threaded
# paths (tests/system/test_tsan.sh). The AVX2 clones (target_clones) are left out
# (NN_NO_CLONES): their ifunc resolvers run before TSan is initialised.
TSAN_BUILD := build/tsan
tsan: ## ThreadSanitizer: server units, then the daemon (tests/system/test_tsan.sh)
	@$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) OPT="-O1 -fno-omit-frame-pointer" \
	  SAN="-fsanitize=thread -DNN_NO_CLONES" $(TSAN_BUILD)/mnistd $(TSAN_BUILD)/tests/test_server_units
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/reliability/tsan.supp $(TSAN_OPTIONS)" \
	  $(TSAN_BUILD)/tests/test_server_units
	@MNISTD_BIN=$(TSAN_BUILD)/mnistd MNISTD_DATA=$(DATA_DIR) tests/system/test_tsan.sh

bench: deps data $(BUILD)/mnistd $(BENCHES) ## speed and memory figures (docs/benchmarks.md)
	@scripts/deps.sh bench
	@MNISTD_DATA=$(DATA_DIR) bench/run.sh $(BUILD)

FUZZ_SECONDS ?= 60
fuzz: ## libFuzzer harnesses, FUZZ_SECONDS each (60)
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# The reliability battery: fault injection, load, Valgrind (tests/README.md).
reliability: $(BUILD)/mnistd ## the faults, load, valgrind and tsan batteries (long; root for some)
	@tests/system/reliability.sh

valgrind: $(BUILD)/mnistd $(TESTS) ## memcheck over the daemon, CLI and unit tests
	@tests/system/test_valgrind.sh

# Serves on 127.0.0.1:8080 (override: make run ARGS="--listen 127.0.0.1:9000").
run: deps data ## build and serve on 127.0.0.1:8080; ARGS="--listen 127.0.0.1:9000" etc.
	@$(MAKE) --no-print-directory $(BUILD)/mnistd
	$(BUILD)/mnistd serve --data-dir $(DATA_DIR) --state-dir state $(ARGS)

PREFIX  ?= /usr/local
DESTDIR ?=
install: $(BUILD)/mnistd data ## install binary, data and systemd unit (PREFIX, DESTDIR)
	@BUILD=$(BUILD) DATA_DIR=$(DATA_DIR) scripts/install.sh "$(PREFIX)" "$(DESTDIR)"

test-docker: ## build the image with podman and test it (root)
	@tests/system/test_docker.sh

# A fleet on loopback: primary, two --follow replicas, nginx in front
# (docs/replicas.md). test-kube: the same from deploy/kubernetes/ under
# `podman kube play` (as root; builds the image like test-docker).
test-replicas: $(BUILD)/mnistd data ## a fleet on loopback: primary, two replicas, nginx (docs/replicas.md)
	@MNISTD_BIN=$(BUILD)/mnistd MNISTD_DATA=$(DATA_DIR) tests/system/test_replicas.sh

test-kube: ## the Kubernetes manifests under podman kube play (root)
	@tests/system/test_kube.sh

test-systemd: $(BUILD)/mnistd data ## check the systemd unit, live under podman if available
	@BUILD=$(BUILD) tests/system/test_systemd.sh

clean: ## remove the build directory, BUILD (default build/)
	rm -rf $(BUILD)

distclean: clean ## also remove data/
	rm -rf data
