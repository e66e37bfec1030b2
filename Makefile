# The two commands: `make train` and `make test`. Both set themselves up in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: train test test-thorough test-gpu gradcheck bench bench-tokenizer shakespeare clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[train]'
	touch $@

# The test extras pin torch==2.13.0: its CPU build installs from the machine's disk.
$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e '.[train,test,dist]'
	touch $@

train: $(VENV)/.base
	$(PY) -m npgpt.cli demo

test: $(VENV)/.test
	$(PY) -m pytest -q -p no:cacheprovider

test-thorough: $(VENV)/.test
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -p no:cacheprovider

# On a GPU machine with network: the venv plus CuPy. On one without (a CUDA image that already holds
# CuPy, torch, transformers, pytest and hypothesis): make test-gpu GPU_PYTHON=python3 uses it as it is.
GPU_PYTHON ?=
ifeq ($(GPU_PYTHON),)
test-gpu: $(VENV)/.test
	$(PIP) install -q -e '.[gpu]'
	$(PY) -m pytest -q -p no:cacheprovider -m gpu
	$(PY) bench/bench_train.py --device cuda
else
test-gpu:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m pytest -q -p no:cacheprovider -m gpu
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) bench/bench_train.py --device cuda
endif

gradcheck: $(VENV)/.base
	$(PY) -m npgpt.cli gradcheck

bench: $(VENV)/.test
	$(PY) bench/bench_train.py

bench-tokenizer: $(VENV)/.test
	$(PY) bench/bench_tokenizer.py

shakespeare: $(VENV)/.test
	$(PY) bench/shakespeare_char.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
