# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv at the repository root on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpp-installed

.PHONY: venv test demo bench clean

$(STAMP): requirements/base.txt requirements/test.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Main job until the ROS node lands: the embedded model on held-out synthetic street scenes.
demo: $(STAMP)
	$(VENV)/bin/segpp-demo --scenes 8 --size 512x1024 --out out/demo

# README figures (CPU, 2 threads, B0, batch 1, 19 classes, all rows in one run per table).
bench: $(STAMP)
	$(VENV)/bin/segpp-bench --threads 2 --variants b0 --sizes 1024x1024,1024x2048 --warmup 3 --iters 15 \
		--json out/bench-b0.json
	$(VENV)/bin/segpp-bench --threads 2 --variants b0 --sizes 1024x1024 --warmup 3 --iters 15 --against-hf \
		--presets none,hq,fast,2x2 --json out/bench-b0-hf.json
	$(VENV)/bin/segpp-bench --threads 2 --variants b2 --sizes 1024x1024 --warmup 2 --iters 8 \
		--json out/bench-b2.json

clean:
	rm -rf $(VENV) out .pytest_cache
