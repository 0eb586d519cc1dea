# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv at the repository root on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpp-installed

.PHONY: venv test demo bench train-models fidelity clean

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

# Reproduce the embedded default models (see README: both ran concurrently, one thread each).
SEG_RUN ?= out/seg-b0
POSE_RUN ?= out/pose-b0
train-models: $(STAMP)
	$(PY) -m segpp_ros.train --task seg --variant b0 --steps 1700 --batch-size 4 --crop 384x384 --lr 4e-4 \
		--warmup-steps 150 --grad-clip 1.0 --seed 0 --workers 1 --threads 1 --fp16 --ckpt-every 100 \
		--log-every 50 --no-progress --out $(SEG_RUN) & \
	$(PY) -m segpp_ros.train --task pose --variant b0 --input-size 256x192 --steps 2800 --batch-size 8 \
		--lr 4e-4 --warmup-steps 200 --grad-clip 1.0 --seed 0 --workers 1 --threads 1 --fp16 --ckpt-every 100 \
		--log-every 50 --no-progress --out $(POSE_RUN) & \
	wait
	$(PY) -m segpp_ros.train --task seg --variant b0 --init $(SEG_RUN)/model.safetensors --steps 1000 \
		--batch-size 4 --crop 384x384 --scale-range 512,1152 --lr 3e-4 --warmup-steps 50 --grad-clip 1.0 \
		--seed 6800 --workers 1 --threads 2 --fp16 --ckpt-every 100 --log-every 50 --no-progress --out $(SEG_RUN)-p2
	cp $(SEG_RUN)-p2/model.safetensors segpp_ros/weights/segpp_b0_synthstreet_seg.safetensors
	cp $(POSE_RUN)/model.safetensors segpp_ros/weights/segpp_b0_synthstreet_pose.safetensors

# Fidelity study for README: accuracy and speed-up of every preset in one run.
fidelity: $(STAMP)
	$(VENV)/bin/segpp-fidelity --threads 2 --scenes 20 --pose-samples 256 --json out/fidelity.json

clean:
	rm -rf $(VENV) out .pytest_cache
