# The two commands of the README. torch is pinned first so that nothing pulls a CUDA build.
PYTHON ?= python
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test install install-test

install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[torch]"

install-test:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[torch,test]"
	# bpnet-lite's own requirements (macs3, modisco, ...) are for training pipelines;
	# its model classes need only torch, tangermeme and h5py.
	$(PIP) --no-deps bpnet-lite==1.1.0

demo: install
	jablate demo

test: install-test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q -n auto --dist worksteal
	# the benchmark suite at small sizes, so it never rots (asserts nothing about time)
	$(PYTHON) -m benchmarks --quick --out $${TMPDIR:-/tmp}/jablate-benchmarks-quick.md
