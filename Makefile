# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv at the repository root on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpp-installed
# ROS 2 Jazzy (LTS): a second venv of Jazzy's wheels, for the node-level ROS tests (make test runs both)
VENV_JAZZY := .venv-jazzy
STAMP_JAZZY := $(VENV_JAZZY)/.segpp-installed

.PHONY: venv venv-jazzy test test-kilted test-jazzy demo bench train-models fidelity clean

# The ROS package (messages, node executable, launch and config files) is built with colcon
# from PyPI into the venv's own prefix, where the ROS wheels live: processes of the venv then
# import segpp.msg with no setup.bash. The Python package comes from the editable pip install.
# $(call colcon,VENV,BUILD_DIR,PATHS,CMAKE_ARGS)
colcon = env AMENT_PREFIX_PATH=$(abspath $(1)) CMAKE_PREFIX_PATH=$(abspath $(1)) PATH=$(abspath $(1))/bin:$$PATH \
	$(1)/bin/colcon --log-base $(2)/log build --paths $(3) --build-base $(2)/build \
	--install-base $(1) --merge-install --event-handlers console_direct- \
	--cmake-args -DPython3_EXECUTABLE=$(abspath $(1))/bin/python3 $(4)
SOURCES = setup.py package.xml CMakeLists.txt msg/*.msg launch/* config/* scripts/*

# The ROS 2 command line and launch system (ros2 launch/run/param/topic/lifecycle, launch_ros) and
# vision_msgs (the node's ~/label_info, ~/persons and detections input) are not on PyPI; the
# workplace's shared folder carries them, built from upstream, with an installer.
ROS2_TOOLS ?= $(firstword $(wildcard ../shared/ros2-tools /work/shared/ros2-tools))
ROS2_TOOLS_INSTALL = if [ -n "$(ROS2_TOOLS)" ]; then $(ROS2_TOOLS)/install.sh $(VENV); else \
	echo "make venv: no ros2-tools folder (../shared/ros2-tools): the node needs vision_msgs from it (in a ROS \
	workspace: apt install ros-\$$ROS_DISTRO-vision-msgs)" >&2; exit 1; fi

$(STAMP): requirements/base.txt requirements/ros.txt requirements/build-tools.txt requirements/test-tools.txt \
		requirements/fleet.txt requirements/test.txt $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	$(call colcon,$(VENV),build/colcon,.,-DSEGPP_INSTALL_PYTHON_PACKAGE=OFF)
	$(ROS2_TOOLS_INSTALL)
	touch $(STAMP)

# a venv made before ros2-tools carried vision_msgs lacks it: install it now
venv: $(STAMP)
	@env AMENT_PREFIX_PATH=$(abspath $(VENV)) $(PY) -c 'import vision_msgs.msg' 2>/dev/null || $(ROS2_TOOLS_INSTALL)

# The same package against Jazzy's wheels, and vision_msgs from ros2-tools' sources (its CLI and launch
# wheels are Kilted builds and are left out: the tests that need them run in .venv only).
$(STAMP_JAZZY): requirements/base.txt requirements/ros-jazzy.txt requirements/build-tools.txt \
		requirements/test-tools.txt requirements/test-jazzy.txt $(SOURCES)
	@test -n "$(ROS2_TOOLS)" || { echo "make venv-jazzy: no ros2-tools folder (../shared/ros2-tools) for vision_msgs" >&2; exit 1; }
	test -x $(VENV_JAZZY)/bin/python || $(PYTHON) -m venv $(VENV_JAZZY)
	$(VENV_JAZZY)/bin/python -m pip install -q --disable-pip-version-check -r requirements/test-jazzy.txt
	$(VENV_JAZZY)/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	$(call colcon,$(VENV_JAZZY),build/jazzy,.,-DSEGPP_INSTALL_PYTHON_PACKAGE=OFF)
	rm -rf build/jazzy-vision
	$(call colcon,$(VENV_JAZZY),build/jazzy-vision,$(ROS2_TOOLS)/src/vision_msgs,\
		-DBUILD_TESTING=OFF -DCMAKE_PROJECT_INCLUDE=$(abspath $(ROS2_TOOLS))/pypi_ros_fix.cmake)
	touch $(STAMP_JAZZY)

venv-jazzy: $(STAMP_JAZZY)

# ROS tests start DDS: everything runs in a private network namespace with only loopback.
# The whole suite on Kilted, then the node-level ROS tests (marker ros_node) on Jazzy.
test: test-kilted test-jazzy

test-kilted: venv
	tools/netns-run $(PY) -m pytest -q

test-jazzy: venv-jazzy
	tools/netns-run $(VENV_JAZZY)/bin/python -m pytest -q -m ros_node

# Main job: the node on the embedded model, a camera publishing the bundled sample sequence,
# and a sink writing label/colour/overlay images to out/demo (all local: see tools/netns-run).
demo: venv
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
	rm -rf $(VENV) $(VENV_JAZZY) out build .pytest_cache
