# qlora-sweep: two commands do all the set-up on a fresh machine.
#   make demo   # set-up + the embedded demo sweep (CPU, local Ray, a few minutes)
#   make test   # set-up + the test suite (make test-fast: the fast tier; make docs: the site)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Without a GPU, a CPU build of torch (2.13.0 lies on this project's dev/CI machines); with
# one, pip's default (CUDA) build. Override: make setup TORCH_SPEC="torch==2.5.1"
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)

.PHONY: setup demo test test-fast docs clean
setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A torch already in the venv (e.g. a CUDA build on a GPU machine) is kept as it is.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

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
