# Set up the pinned stack in .venv and run the main job or the tests.
# See ../shared/STACK.md for why each pin and trap is there.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python ships only as source: build it once, portable (no -march=native, so no
# AMX repack kernels, which crash on quantized models on some Xeons), and keep the wheel.
WHEELS ?= $(HOME)/.cache/edgedistill/wheels
LLAMA_CPP := llama-cpp-python==0.3.36

.PHONY: build test venv clean

build: venv
	$(BIN)/edgedistill build

test: venv
	$(BIN)/python -m pytest

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir $(LLAMA_CPP) -w $(WHEELS)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --find-links $(WHEELS) -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) edgedistill-out
