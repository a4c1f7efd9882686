# Set-up and everyday commands. `make test` and `make demo` create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: test demo demo-fashion venv benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[training,interpretability,dev]" $(TORCH_PINS)
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	BCOS_KEEP_FREED_MEMORY=1 $(PY) -m bcos.demo  # opt-in glibc tuning (bcos.cpu_allocator)

demo-fashion: $(STAMP)
	BCOS_KEEP_FREED_MEMORY=1 $(PY) -m bcos.demo --dataset FashionMNIST --localise  # needs dataset-fashion-mnist (apt) or DATA_ROOT

benchmark: $(STAMP)
	$(PY) -m benchmarks.run_cpu

clean:
	rm -rf $(VENV) build *.egg-info
