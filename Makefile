# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv at the repository root on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpp-installed

.PHONY: venv test demo bench train-models fidelity clean

VENV_ABS = $(abspath $(VENV))
# The ROS package (messages, node executable, launch and config files) is built with colcon
# from PyPI into the venv's own prefix, where the ROS wheels live: processes of the venv then
# import segpp.msg with no setup.bash. The Python package comes from the editable pip install.
COLCON = env AMENT_PREFIX_PATH=$(VENV_ABS) CMAKE_PREFIX_PATH=$(VENV_ABS) PATH=$(VENV_ABS)/bin:$$PATH \
	$(VENV)/bin/colcon --log-base build/colcon/log build --paths . --build-base build/colcon/build \
	--install-base $(VENV) --merge-install --event-handlers console_direct- \
	--cmake-args -DPython3_EXECUTABLE=$(VENV_ABS)/bin/python3 -DSEGPP_INSTALL_PYTHON_PACKAGE=OFF

# The ROS 2 command line and launch system (ros2 launch/run/param/topic/lifecycle, launch_ros) are
# not on PyPI; the workplace's shared folder carries them, built from upstream, with an installer.
# Without it everything else works and the tests that need `ros2` skip, saying why.
ROS2_TOOLS ?= $(firstword $(wildcard ../shared/ros2-tools /work/shared/ros2-tools))

$(STAMP): requirements/base.txt requirements/ros.txt requirements/test.txt setup.py package.xml CMakeLists.txt \
		msg/*.msg launch/* config/* scripts/*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	$(COLCON)
	if [ -n "$(ROS2_TOOLS)" ]; then $(ROS2_TOOLS)/install.sh $(VENV); \
	else echo "make venv: no ros2-tools folder (../shared/ros2-tools): no ros2 command, its tests will skip"; fi
	touch $(STAMP)

venv: $(STAMP)

# ROS tests start DDS: everything runs in a private network namespace with only loopback.
test: $(STAMP)
	tools/netns-run $(PY) -m pytest -q

# Main job: the node on the embedded model, a camera publishing the bundled sample sequence,
# and a sink writing label/colour/overlay images to out/demo (all local: see tools/netns-run).
demo: $(STAMP)
	tools/netns-run $(VENV)/bin/segpp-demo --out out/demo

# docs/benchmarks.md figures (CPU, 2 threads, B0, batch 1, 19 classes, all rows in one run per table).
bench: $(STAMP)
	$(VENV)/bin/segpp-bench --threads 2 --variants b0 --sizes 1024x1024,1024x2048 --warmup 3 --iters 15 \
		--json out/bench-b0.json
	$(VENV)/bin/segpp-bench --threads 2 --variants b0 --sizes 1024x1024 --warmup 3 --iters 15 --against-hf \
		--presets none,hq,fast,2x2 --json out/bench-b0-hf.json
	$(VENV)/bin/segpp-bench --threads 2 --variants b2 --sizes 1024x1024 --warmup 2 --iters 8 \
		--json out/bench-b2.json

# Reproduce the embedded default models (see docs/training.md: both ran concurrently, one thread each).
SEG_RUN ?= out/seg-b0
POSE_RUN ?= out/pose-b0
train-models: $(STAMP)
	$(VENV)/bin/segpp-train --task seg --variant b0 --steps 1700 --batch-size 4 --crop 384x384 --lr 4e-4 \
		--warmup-steps 150 --grad-clip 1.0 --seed 0 --workers 1 --threads 1 --fp16 --ckpt-every 100 \
		--log-every 50 --no-progress --out $(SEG_RUN) & \
	$(VENV)/bin/segpp-train --task pose --variant b0 --input-size 256x192 --steps 2800 --batch-size 8 \
		--lr 4e-4 --warmup-steps 200 --grad-clip 1.0 --seed 0 --workers 1 --threads 1 --fp16 --ckpt-every 100 \
		--log-every 50 --no-progress --out $(POSE_RUN) & \
	wait
	$(VENV)/bin/segpp-train --task seg --variant b0 --init $(SEG_RUN)/model.safetensors --steps 1000 \
		--batch-size 4 --crop 384x384 --scale-range 512,1152 --lr 3e-4 --warmup-steps 50 --grad-clip 1.0 \
		--seed 6800 --workers 1 --threads 2 --fp16 --ckpt-every 100 --log-every 50 --no-progress --out $(SEG_RUN)-p2
	$(VENV)/bin/segpp-train --task seg --variant b0 --init $(SEG_RUN)-p2/model.safetensors --steps 3000 \
		--batch-size 4 --crop 384x384 --scale-range 512,1152 --lr 2e-4 --warmup-steps 50 --grad-clip 1.0 \
		--seed 10800 --workers 1 --threads 2 --fp16 --ckpt-every 100 --log-every 50 --no-progress --out $(SEG_RUN)-p3
	cp $(SEG_RUN)-p3/model.safetensors segpp_ros/weights/segpp_b0_synthstreet_seg.safetensors
	cp $(POSE_RUN)/model.safetensors segpp_ros/weights/segpp_b0_synthstreet_pose.safetensors

# Fidelity study for docs/training.md: accuracy and speed-up of every preset in one run.
fidelity: $(STAMP)
	$(VENV)/bin/segpp-fidelity --threads 2 --scenes 20 --pose-samples 256 --json out/fidelity.json

clean:
	rm -rf $(VENV) out build .pytest_cache
