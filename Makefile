# Two commands a newcomer needs: `make demo` (set up, run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

# CPU PyTorch is pinned here, in the install step; the package itself declares a range so
# that users on GPUs can bring a CUDA build. The embed (offline text and image encoders),
# tensorboard, export (ONNX), serve (HTTP scoring), search (Optuna) and track (MLflow) extras
# are installed too, so that the tests exercise them.
# TORCH_VERSION and TORCH_INDEX choose the build: `make setup TORCH_INDEX=https://download.
# pytorch.org/whl/cpu` takes PyTorch's CPU wheel, .../whl/cu126 a CUDA 12.6 one (README).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH := "torch==$(TORCH_VERSION)"
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet $(TORCH) -e ".[dev,embed,tensorboard,export,serve,search,track]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
