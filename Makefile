# Every target bootstraps .venv from nothing. torch is installed first and pinned to 2.13.0: that is
# the CPU wheel on these machines' local disk, and nothing later may pull a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.calibrax-installed
PYTEST_WORKERS ?= 2

.PHONY: venv test test-fast demo lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,all]'
	# The reference LPIPS package only for its packaged v0.1 heads (read without importing it):
	# its declared torchvision dependency does not install beside torch 2.13.0.
	$(BIN)/python -m pip install --quiet --no-deps lpips==0.1.4
	# The reference tools whose resize the parity tests run (tests/reference/test_resize_reference.py
	# imports only their torch/PIL resize code): they too declare torchvision, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps pytorch-fid==0.3.0 clean-fid==0.1.35
	# torch-fidelity beside the venv, not in it: torchmetrics imports an installed torch_fidelity,
	# whose __init__ needs torchvision, and that would break every `import torchmetrics`.
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/reference-src torch-fidelity==0.4.0
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30 tests

test-fast: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" tests

demo: venv
	$(BIN)/python examples/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python benchmarks/run_all.py $(NAMES)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
