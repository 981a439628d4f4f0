# Two entry points, each of which sets everything up first (a virtual
# environment in .venv, torch, the compiled extension):
#
#   make demo    the main job: a plain classifier, CondNet and CAC on the same
#                network, trained on generated scenes on this CPU (under 10 minutes)
#   make test    lint and the whole test suite (what CI's .ci/run calls)
#
# and, for working on the code: `make lint` (ruff, ruff format --check,
# clang-format --dry-run over csrc/, mypy), `make format` (rewrites the files
# those formatters check), `make test-fast` (the tests not marked slow, no
# lint), and `make bench`, the kernel benchmark behind docs/benchmarks.md.
#
# Which extension is built. `make install` (and so `make test`, which CI runs,
# and `make bench`) is the full build: the CPU kernels, and the CUDA kernels
# when a CUDA toolkit and a CUDA build of torch are found (see setup.py), GPU or
# not. `make demo` builds only what this machine can run: where no GPU is usable
# (torch.cuda.is_available() is false in the venv: no driver, no device, or
# CUDA_VISIBLE_DEVICES hides them all) it builds the CPU kernels only
# (CONDNET_CPU_ONLY=1), which skips minutes of nvcc; where one is, the full
# build. DEMO_GPU=1 or DEMO_GPU=0 overrides that check (default: auto).
#
# Two stamps record which build is installed, at most one at a time:
# $(VENV)/.built (full) and $(VENV)/.built-cpu (CPU only); each is remade when a
# C++/CUDA source or a build file is newer. A full build that is up to date
# serves the demo as it is; after a CPU-only demo build, `make test` or
# `make install` rebuilds with CUDA.
#
# Variables: PYTHON (interpreter for the venv), VENV, TORCH_VERSION,
# TORCHVISION_VERSION, MAX_JOBS, DEMO_GPU. CONDNET_CPU_ONLY=1 in the
# environment makes every build CPU-only.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
MAX_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEMO_GPU ?= auto
PY := $(VENV)/bin/python
# The venv's tools (ninja, cmake, ruff) first, without activating it.
export PATH := $(abspath $(VENV))/bin:$(PATH)
SOURCES := setup.py pyproject.toml CMakeLists.txt $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/*/*/*.h)
# What clang-format checks and formats (style: .clang-format).
CSRC_FORMATTED := $(shell find csrc tests/cuda_emulation -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)
RESULTS := benchmarks/results

.PHONY: install test test-fast demo demo-install demo-seeds bench lint format clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION) ninja
	touch $@

# The full build brings what the tests need; the demo's CPU-only build only what it runs.
PIP_INSTALL := $(PY) -m pip install --no-build-isolation -e ".[test,bench,integrations]"
PIP_INSTALL_DEMO := $(PY) -m pip install --no-build-isolation -e .
BUILD_INFO := $(PY) -c "import condnet.ops, json; print(json.dumps(condnet.ops.build_info(), indent=1))"
GPU_CHECK := import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)

# The full build; rebuilt whenever a C++/CUDA source or the build files change.
# Each build first drops the other's stamp: the extension it replaces is gone.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	rm -f $(VENV)/.built-cpu
	MAX_JOBS=$(MAX_JOBS) $(PIP_INSTALL)
	$(BUILD_INFO)
	touch $@

# The CPU kernels only: what `make demo` builds where no GPU is usable.
$(VENV)/.built-cpu: $(VENV)/.deps $(SOURCES)
	rm -f $(VENV)/.built
	CONDNET_CPU_ONLY=1 MAX_JOBS=$(MAX_JOBS) $(PIP_INSTALL_DEMO)
	$(BUILD_INFO)
	touch $@

install: $(VENV)/.built

# What the demo needs (see the header): the full build where a GPU is usable,
# else an up-to-date full build if there is one, else the CPU-only build.
# (`make -q` asks make itself whether a stamp is up to date.)
demo-install: $(VENV)/.deps
	@case "$(DEMO_GPU)" in \
	  1) gpu=1 ;; \
	  0) gpu=0 ;; \
	  auto) if $(PY) -c "$(GPU_CHECK)" 2>/dev/null; then gpu=1; else gpu=0; fi ;; \
	  *) echo "DEMO_GPU must be auto, 1 or 0; got '$(DEMO_GPU)'" >&2; exit 2 ;; \
	esac; \
	if [ $$gpu = 1 ]; then \
	  echo "make demo: a usable GPU: the full build (CPU and CUDA kernels)"; \
	  $(MAKE) --no-print-directory $(VENV)/.built; \
	elif $(MAKE) --no-print-directory -q $(VENV)/.built 2>/dev/null; then \
	  echo "make demo: no usable GPU; the full build installed is up to date and serves"; \
	elif $(MAKE) --no-print-directory -q $(VENV)/.built-cpu 2>/dev/null; then \
	  echo "make demo: no usable GPU; the CPU-only build installed is up to date"; \
	else \
	  echo "make demo: no usable GPU: building the CPU kernels only (make install adds CUDA)"; \
	  $(MAKE) --no-print-directory $(VENV)/.built-cpu; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $(CSRC_FORMATTED)
	$(PY) -m mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i $(CSRC_FORMATTED)

test: lint
	$(PY) -m pytest -q

# Everything but the tests marked slow (builds, compiles, the installed wheel).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Writes data/scenes/cue (unless it is there), trains the plain, CondNet and CAC
# arms at seed 0 into work_dirs/demo/cue-seed0 (resuming an interrupted run),
# prints the table next to the committed multi-seed intervals and saves
# predictions.png, masks.png, curves.png and results.json there.
demo: demo-install
	$(PY) tools/demo.py

# The committed multi-seed comparison behind docs/demo.md's tables: the three arms
# at seeds 0-4 on both scene sets (cue and control), paired per seed; the report
# and the learning curves over seeds go to benchmarks/results.
demo-seeds: demo-install
	$(PY) tools/demo.py --seeds 0,1,2,3,4 --scenes cue,control --committed none \
		--json $(RESULTS)/demo_scenes.json

# The committed CPU results at the shapes the released heads run
# (benchmarks/kernel_cases.py): every op and mode at ade (B=2, 128x128) with
# the classifier's K and N sweeps around it (no released formulation there:
# its backward takes 4-13 s a call at K >= 256) and their plot, in float32;
# the whole classifier at ade-b8 (B=8) in float32 and amp-bfloat16; every op
# at ade in amp-bfloat16 (bf16 features, float32 parameters, under autocast).
# The ade and ade-b8 rows twice each, interleaved; the sweeps once. Then
# CAC's whole classifier (cac: the fused op against eager and compile of the
# released formulation) at ade and ade-b8 in float32 and amp-bfloat16, twice
# each, interleaved, into cpu_kernels_cac. The four commands took 13 minutes
# on the quiet 2-core machine (after the build).
# The CondNet ops the first three runs time (cac has its own run and files).
BENCH_CONDNET_OPS = class_pool,dynamic_classify,project,classifier
bench: install
	$(PY) benchmarks/run_kernels.py --device cpu --dtype float32 --budget 0.5 --repeat 2 \
		--shapes ade,sweep-k,sweep-n --ops $(BENCH_CONDNET_OPS) --sweep-ops classifier \
		--sweep-providers eager,compile,extension \
		--json $(RESULTS)/cpu_kernels.json --markdown $(RESULTS)/cpu_kernels.md \
		--plot $(RESULTS)/cpu_kernels.png
	$(PY) benchmarks/run_kernels.py --device cpu --dtype float32,amp-bfloat16 --budget 0.5 \
		--repeat 2 --shapes ade-b8 --ops classifier \
		--json $(RESULTS)/cpu_kernels_b8.json --markdown $(RESULTS)/cpu_kernels_b8.md
	$(PY) benchmarks/run_kernels.py --device cpu --dtype amp-bfloat16 --budget 0.5 --repeat 2 \
		--shapes ade --ops $(BENCH_CONDNET_OPS) \
		--json $(RESULTS)/cpu_kernels_amp.json --markdown $(RESULTS)/cpu_kernels_amp.md
	$(PY) benchmarks/run_kernels.py --device cpu --dtype float32,amp-bfloat16 --budget 0.5 \
		--repeat 2 --shapes ade,ade-b8 --ops cac --providers eager,compile,extension \
		--json $(RESULTS)/cpu_kernels_cac.json --markdown $(RESULTS)/cpu_kernels_cac.md

clean:
	rm -rf $(VENV) build *.egg-info condnet/*.so
