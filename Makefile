# The two set-up commands: `make demo` (a tiny pretraining run, end to end) and `make test`.
# Both create or refresh .venv from the project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in requirements.txt and installed in the same resolve, never unpinned.
	# DS_BUILD_OPS=0: DeepSpeed installs without compiling its CUDA/C++ ops.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m megatron_ponder.demo

# Two workers, whole files each (module fixtures such as the Slurm cluster and the shared
# DP runs are built once): 925-993 s against 1213 s serial on the quiet 2-core machine;
# 860 s for the 787 tests of 6 Dec 2026 (fresh clone, quiet).
# TEST_WORKERS=0 runs serially; more workers on a larger machine.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) bench/attention.py
	$(PY) bench/train_step.py
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
