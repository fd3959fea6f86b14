# Two entry points for newcomers: `make demo` (set up, then run the main job) and `make test`.
# Both create .venv, install the CPU build of torch first when the machine has no NVIDIA GPU, then halitool.

VENV ?= .venv
PY := $(VENV)/bin/python
HALITOOL := $(VENV)/bin/halitool
TORCH_VERSION ?= 2.13.0
# Outside this workplace, point pip at PyTorch's CPU wheels: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
DATA ?= $(CURDIR)/data
DEMO ?= $(CURDIR)/runs/demo

.PHONY: setup test test-fast demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing torch with CUDA"; $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else \
		echo "no GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q --durations=15

test-fast: setup
	$(PY) -m pytest -q --durations=15 -m "not network and not slow"

# The main job on the shipped model: what it is, how faithfully each level reconstructs, what its features
# hold (attribute probes) and how well they classify MNIST with 100 labels.
demo: setup
	@mkdir -p $(DEMO)
	$(HALITOOL) data fetch mnist --root $(DATA)/mnist
	$(HALITOOL) data info mnist:$(DATA)/mnist --format table
	$(HALITOOL) info hali-mnist --format table
	$(HALITOOL) reconstruct hali-mnist --data mnist:$(DATA)/mnist -o $(DEMO)/reconstructions.png --force --format table
	$(HALITOOL) sample hali-mnist -o $(DEMO)/samples.png --force
	$(HALITOOL) extract hali-mnist --data mnist:$(DATA)/mnist -o $(DEMO)/features.h5 --force --format json
	$(HALITOOL) probe-attributes $(DEMO)/features.h5 --max-train 10000 --format table
	HALITOOL_DATA=$(DATA) $(HALITOOL) semisup --labels 100 --format table

# Every benchmark against its baseline in one process (quick sizes); one JSON document on stdout.
bench: setup
	$(HALITOOL) data fetch mnist --root $(DATA)/mnist
	$(PY) benchmarks/run_all.py --mnist mnist:$(DATA)/mnist

clean:
	rm -rf $(VENV) runs .pytest_cache
