# peft.cpp — `make` builds build/libpeft.a and build/peft; `make test` runs the doctest suite;
# `make train` pretrains a small GPT on the shipped corpus. Missing Debian packages are
# installed first (apt-get, with sudo when not root).
CXX      ?= g++
ARCH     ?= -march=native
OPT      ?= -O2
BUILD    ?= build
SAN      ?=
CXXFLAGS += -std=c++17 $(OPT) $(ARCH) -g -Wall -Wextra -fno-math-errno -fopenmp -MMD -MP -I. $(SAN)
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
LDLIBS   += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lfmt -fopenmp $(SAN)
PKGS     := g++ make libopenblas-openmp-dev doctest-dev libfmt-dev nlohmann-json3-dev libcli11-dev

LIB_SRC  := $(wildcard engine/*.cpp data/*.cpp models/*.cpp peft/*.cpp)
CLI_SRC  := $(wildcard cli/*.cpp)
TEST_SRC := $(wildcard tests/*.cpp)
obj = $(patsubst %.cpp,$(BUILD)/obj/%.o,$(1))

all: $(BUILD)/peft
.PHONY: all deps test test-asan sanitize train bench-engine clean

deps: $(BUILD)/.deps
$(BUILD)/.deps:
	@missing=$$(for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/obj/%.o: %.cpp | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/libpeft.a: $(call obj,$(LIB_SRC))
	ar rcs $@ $^

$(BUILD)/peft: $(call obj,$(CLI_SRC)) $(BUILD)/libpeft.a
	$(CXX) $^ -o $@ $(LDLIBS)

$(BUILD)/tests: $(call obj,$(TEST_SRC)) $(BUILD)/libpeft.a
	$(CXX) $^ -o $@ $(LDLIBS)

test: $(BUILD)/tests
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/tests $(TEST_ARGS)

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build folder.
test-asan sanitize:
	$(MAKE) test BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
