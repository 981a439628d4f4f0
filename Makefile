# Two entry points, each of which sets everything up first (a virtual
# environment in .venv, torch, the compiled extension):
#
#   make demo    the main job: CondNet against its plain twin, trained on the
#                generated scenes on this CPU (a few minutes)
#   make test    lint and the test suite
#
# and `make bench`, the kernel benchmark behind the README's Results.
#
# Variables: PYTHON (interpreter for the venv), VENV, TORCH_VERSION,
# TORCHVISION_VERSION, MAX_JOBS. CUDA is built when a toolkit is found
# (see setup.py); CONDNET_CPU_ONLY=1 skips it.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
MAX_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PY := $(VENV)/bin/python
# The venv's tools (ninja, cmake, ruff) first, without activating it.
export PATH := $(abspath $(VENV))/bin:$(PATH)
SOURCES := setup.py pyproject.toml CMakeLists.txt $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/*/*/*.h)
RESULTS := benchmarks/results

.PHONY: install test demo bench lint clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION) ninja
	touch $@

# Rebuilt whenever a C++/CUDA source or the build files change.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	MAX_JOBS=$(MAX_JOBS) $(PY) -m pip install --no-build-isolation -e ".[test,bench,integrations]"
	$(PY) -c "import condnet.ops, json; print(json.dumps(condnet.ops.build_info(), indent=1))"
	touch $@

install: $(VENV)/.built

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# Writes data/scenes, trains into work_dirs/demo (resuming an interrupted run),
# prints both mIoUs and saves work_dirs/demo/{predictions,guidance}.png.
demo: install
	$(PY) tools/demo.py

# The committed CPU results: every op and mode at the ADE shape with B=2 and
# B=8, and the classifier's K and N sweeps (B=2) with their plot, in float32;
# then the projection and the whole classifier as mixed-precision training
# runs them (bf16 features, float32 parameters, under autocast). About 15
# minutes on the quiet 2-core CI machine.
bench: install
	$(PY) benchmarks/run_kernels.py --device cpu --dtype float32 \
		--shapes B=2,C=512,K=150,H=64,W=64,ade,sweep-k,sweep-n --sweep-ops classifier \
		--json $(RESULTS)/cpu_kernels.json --markdown $(RESULTS)/cpu_kernels.md \
		--plot $(RESULTS)/cpu_kernels.png
	$(PY) benchmarks/run_kernels.py --device cpu --dtype amp-bfloat16 \
		--shapes B=2,C=512,K=150,H=64,W=64,ade --ops project,classifier \
		--json $(RESULTS)/cpu_kernels_amp.json --markdown $(RESULTS)/cpu_kernels_amp.md

clean:
	rm -rf $(VENV) build *.egg-info condnet/*.so
