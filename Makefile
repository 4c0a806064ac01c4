# peft.cpp — `make` builds build/libpeft.a and build/peft; `make test` runs the doctest suite;
# `make train` pretrains a small GPT on the shipped corpus. Missing Debian packages are
# installed first (apt-get, with sudo when not root).
MAKEFLAGS += -j$(shell nproc)
CXX      ?= g++
ARCH     ?= -march=native
OPT      ?= -O2
DBG      ?= -g
BUILD    ?= build
SAN      ?=
CXXFLAGS += -std=c++17 $(OPT) $(ARCH) $(DBG) -Wall -Wextra -fno-math-errno -fopenmp -MMD -MP -I. $(SAN)
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
# PCRE2 (-lpcre2-8) runs GPT-2's pre-tokenizer regex as written, with real Unicode classes.
LDLIBS   += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lfmt -lpcre2-8 -fopenmp -ldl $(SAN)
PKGS     := g++ make libopenblas-openmp-dev doctest-dev libfmt-dev nlohmann-json3-dev libcli11-dev \
            libopenmpi-dev openmpi-bin libpcre2-dev
# MPI's flags from its compiler wrapper, asked when the one file that needs them is built (after
# `deps` installed Open MPI). Only build/libpeft_mpi.so links MPI; the program loads it under
# mpirun alone (Note [Loading MPI only under mpirun], engine/dist.cpp).
MPI_CFLAGS = $(shell mpicxx --showme:compile)
MPI_LIBS   = $(shell mpicxx --showme:link)

# engine/openblas_core.cpp is linked into the programs, not the library (its Note says why;
# `make OPENBLAS_CORE=` leaves it out).
OPENBLAS_CORE ?= $(BUILD)/obj/engine/openblas_core.o
LIB_SRC  := $(filter-out engine/openblas_core.cpp engine/dist_mpi.cpp,$(wildcard engine/*.cpp data/*.cpp models/*.cpp peft/*.cpp train/*.cpp))
CLI_SRC  := $(wildcard cli/*.cpp)
TEST_SRC := $(wildcard tests/*.cpp)
obj = $(patsubst %.cpp,$(BUILD)/obj/%.o,$(1))

all: $(BUILD)/peft
.PHONY: all deps test test-asan sanitize train compare bench bench-engine fuzz check-leaks clean gpt2-lora

# `make train`: pretrain a base model on DATA (once: a finished base is reused, an unfinished
# one resumed), then fine-tune it with METHOD on the task TASK, with the method's own learning
# rate and steps (train/defaults.h). Override any of these: make train METHOD=ia3 TASK=reverse
# THREADS=1; FT_STEPS and FT_LR override the method's defaults.
DATA ?= stories
TASK ?= dates
METHOD ?= lora
STEPS ?= 1500
MODEL ?= --n_layer 4 --n_head 4 --n_embd 128 --block 64
RUNS ?= runs
BASE_CKPT = $(RUNS)/base/model.safetensors
THREADS_FLAG = $(if $(THREADS),--threads $(THREADS))
define pretrain_base
	@state=$$(./$(BUILD)/peft status $(RUNS)/base) || exit 1; \
	case "$$state" in \
	  finished*) echo "reusing the base model $(BASE_CKPT) ($$state; delete $(RUNS)/base to pretrain again)";; \
	  unknown*) echo "reusing the base model $(BASE_CKPT) ($$state; delete $(RUNS)/base to pretrain again)";; \
	  none) cmd="./$(BUILD)/peft train --data $(DATA) --out $(RUNS)/base --steps $(STEPS) $(MODEL) --dropout 0.0 --eval_every 250 $(THREADS_FLAG)"; \
	        echo "pretraining the base model:"; echo "$$cmd"; $$cmd || exit 1;; \
	  *) cmd="./$(BUILD)/peft train --data $(DATA) --out $(RUNS)/base --resume $(THREADS_FLAG)"; \
	     echo "the base model in $(RUNS)/base is $$state: resuming it"; echo "$$cmd"; $$cmd || exit 1;; \
	esac
endef
train: $(BUILD)/peft
	$(pretrain_base)
	./$(BUILD)/peft train --base $(BASE_CKPT) --data $(TASK) --method $(METHOD) --out $(RUNS)/$(METHOD)-$(TASK) --overwrite \
	  $(if $(FT_STEPS),--steps $(FT_STEPS)) $(if $(FT_LR),--lr $(FT_LR)) --eval_every 100 --samples 40 $(THREADS_FLAG)
	@echo "logs and plots: $(RUNS)/base/{log.csv,loss.svg}, $(RUNS)/$(METHOD)-$(TASK)/{log.csv,loss.svg}"

# `make gpt2-lora GPT2=DIR TEXT=FILE`: fine-tune a GPT-2 you have (a Hugging Face folder with config.json,
# model.safetensors, vocab.json + merges.txt: gpt2, distilgpt2, ...) with LoRA on c_attn on your own text,
# then sample from it. Nothing is downloaded. The adapter folder loads in HF PEFT (docs/GPT2.md).
GPT2 ?=
TEXT ?=
GPT2_STEPS ?= 200
GPT2_BLOCK ?= 128
GPT2_LR ?= 1e-3
PROMPT ?= The
gpt2-lora: $(BUILD)/peft
	@if [ -z "$(GPT2)" ] || [ -z "$(TEXT)" ]; then echo "usage: make gpt2-lora GPT2=path/to/gpt2-folder TEXT=your-text.txt"; exit 2; fi
	./$(BUILD)/peft train --base $(GPT2) --data $(TEXT) --method lora --target_modules c_attn --out $(RUNS)/gpt2-lora \
	  --steps $(GPT2_STEPS) --block $(GPT2_BLOCK) --batch 4 --lr $(GPT2_LR) --eval_every 50 --eval_iters 4 --samples 40
	./$(BUILD)/peft generate --model $(GPT2) --adapter $(RUNS)/gpt2-lora --prompt "$(PROMPT)" --max_new 60 --temperature 0.8

# `make compare`: full fine-tuning and every PEFT method on TASK from the same base model, one table
# (runs/compare/compare.md, .csv, val_loss.svg, memory.svg); each method with its own learning
# rate and steps, as `make train` (CMP_STEPS=N gives every method N steps).
compare: $(BUILD)/peft
	$(pretrain_base)
	./$(BUILD)/peft compare --base $(BASE_CKPT) --data $(TASK) $(if $(CMP_STEPS),--steps $(CMP_STEPS)) --out $(RUNS)/compare $(THREADS_FLAG)

# `make bench`: bench/suite.py times `peft bench` at three model shapes (tiny, small, GPT-2) for
# METHODS (default full,lora; any of full,lora,ia3,adapter,prefix,prompt) and CONFIGS (default
# tiny,small,gpt2). REFERENCE=1 runs bench/torch_reference.py (needs Debian's python3-torch) after
# each of ours and adds its figures; REPEATS=3 runs every pair three times, alternating, and
# reports medians. PYTHON is Debian's python3, where python3-torch installs.
PYTHON ?= /usr/bin/python3
bench: $(BUILD)/peft
	$(PYTHON) bench/suite.py --peft ./$(BUILD)/peft --threads 2 $(if $(METHODS),--methods $(METHODS)) \
	  $(if $(CONFIGS),--configs $(CONFIGS)) $(if $(REPEATS),--repeats $(REPEATS)) \
	  $(if $(REFERENCE),--reference "$(PYTHON) bench/torch_reference.py")

bench-engine: $(BUILD)/peft
	./$(BUILD)/peft bench-engine --threads 2

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
	rm -f $@ && ar rcs $@ $^

$(BUILD)/peft: $(call obj,$(CLI_SRC)) $(OPENBLAS_CORE) $(BUILD)/libpeft.a | $(BUILD)/libpeft_mpi.so
	$(CXX) $^ -o $@ $(LDLIBS)

$(BUILD)/libpeft_mpi.so: engine/dist_mpi.cpp engine/dist_backend.h | $(BUILD)/.deps
	$(CXX) -std=c++17 $(OPT) $(DBG) -Wall -Wextra -fPIC -shared -I. $(SAN) -DOMPI_SKIP_MPICXX $(MPI_CFLAGS) $< -o $@ $(MPI_LIBS)

$(BUILD)/tests: $(call obj,$(TEST_SRC)) $(call obj,cli/op_profile.cpp) $(OPENBLAS_CORE) $(BUILD)/libpeft.a | $(BUILD)/libpeft_mpi.so
	$(CXX) $^ -o $@ $(LDLIBS)

# The CLI tests (tests/test_cli.cpp) run the real program named by PEFT_BIN.
test: $(BUILD)/tests $(BUILD)/peft
	PEFT_BIN=$(BUILD)/peft OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/tests $(TEST_ARGS)

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build folder. -O0 -g1
# builds in half the CPU time of -O1 -g (the suite runs ~15% slower); line tables are all the
# reports need.
test-asan sanitize:
	$(MAKE) test BUILD=build-asan OPT=-O0 DBG=-g1 SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

# libFuzzer targets (clang) under ASan + UBSan, FUZZ_TIME seconds each, from the seed corpora.
FUZZ_TIME ?= 60
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
fuzz:
	$(MAKE) build-fuzz/libpeft.a BUILD=build-fuzz CXX=clang++ OPT=-O1 SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" \
	  PKGS="$(PKGS) clang libomp-14-dev libclang-rt-14-dev"
	@for t in safetensors adapter_config data; do \
	  clang++ -std=c++17 -O1 -g -I. -fopenmp $(FUZZ_SAN) -fsanitize=fuzzer tests/fuzz/fuzz_$$t.cpp build-fuzz/libpeft.a \
	    -o build-fuzz/fuzz_$$t $(LDLIBS) || exit 1; \
	  mkdir -p build-fuzz/corpus/$$t && cp tests/fuzz/seeds/$$t/* build-fuzz/corpus/$$t/; \
	  ./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	    build-fuzz/corpus/$$t > build-fuzz/fuzz_$$t.log 2>&1; rc=$$?; echo "fuzz_$$t:"; \
	  grep -E "^#[0-9]+[[:space:]]+DONE|number_of_executed_units" build-fuzz/fuzz_$$t.log; \
	  [ $$rc = 0 ] || { tail -40 build-fuzz/fuzz_$$t.log; exit 1; }; \
	done

# Valgrind memcheck at one thread on a short pretraining run + save, `peft eval` loading it, and
# a tiny LoRA fine-tune whose adapter is saved and loaded again: any memcheck error or any block
# definitely lost fails. Its own build: valgrind cannot decode the AVX-512 that -march=native
# may emit here.
VG_BUILD := build-valgrind
VG_DIR   := $(VG_BUILD)/leaks
VALGRIND := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 valgrind -q --error-exitcode=1 --leak-check=full \
            --errors-for-leak-kinds=definite
check-leaks:
	$(MAKE) $(VG_BUILD)/peft BUILD=$(VG_BUILD) ARCH=-march=x86-64-v3 PKGS="$(PKGS) valgrind"
	rm -rf $(VG_DIR) && mkdir -p $(VG_DIR)
	head -n 40 data/tasks/dates.tsv > $(VG_DIR)/task.tsv
	{ head -c 20000 data/corpus.txt; cat $(VG_DIR)/task.tsv; } > $(VG_DIR)/corpus.txt
	$(VALGRIND) ./$(VG_BUILD)/peft train --data $(VG_DIR)/corpus.txt --out $(VG_DIR)/base --steps 3 \
	  --n_layer 1 --n_head 2 --n_embd 16 --block 32 --batch 2 --eval_iters 1 --samples 8
	$(VALGRIND) ./$(VG_BUILD)/peft eval --model $(VG_DIR)/base/model.safetensors --data $(VG_DIR)/corpus.txt \
	  --batch 2 --eval_iters 1
	$(VALGRIND) ./$(VG_BUILD)/peft train --base $(VG_DIR)/base/model.safetensors --method lora --data $(VG_DIR)/task.tsv \
	  --out $(VG_DIR)/lora --steps 2 --batch 2 --eval_iters 1 --samples 8
	$(VALGRIND) ./$(VG_BUILD)/peft eval --model $(VG_DIR)/base/model.safetensors --adapter $(VG_DIR)/lora \
	  --data $(VG_DIR)/task.tsv --batch 2 --eval_iters 1 --accuracy_examples 2
	@echo "check-leaks: no memcheck errors and nothing definitely lost"

clean:
	rm -rf build build-asan build-fuzz $(VG_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
