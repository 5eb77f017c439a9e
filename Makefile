# Two commands do all the set-up on a fresh machine:
#   make demo   create/refresh .venv, then run the main job on the built-in default
#   make test   create/refresh .venv, then run the test suite
# .venv is (re)built by scripts/setup_venv.sh only when one of its inputs changed; the stamp
# .venv/.cract-stamp records the last good build (it lives inside .venv, so deleting .venv
# rebuilds everything).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cract-stamp
SETUP_INPUTS := requirements.txt package.xml CMakeLists.txt setup.py scripts/setup_venv.sh \
                scripts/setup_ros2_tools.sh requirements-ros2-tools.txt scripts/tracker_node scripts/follower_node \
                $(wildcard msg/*.msg srv/*.srv setup.cfg pyproject.toml)

# One DDS domain per make run, so that concurrent test runs on one host do not see each
# other's nodes; set ROS_DOMAIN_ID to pin it. (`:=` so it is drawn once, not per use.)
ifndef ROS_DOMAIN_ID
ROS_DOMAIN_ID := $(shell shuf -i 1-100 -n 1)
endif

# What rclpy needs to find this package's interfaces and talk over loopback shared memory.
ROS_ENV := AMENT_PREFIX_PATH=$(CURDIR)/$(VENV) \
           ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
           FASTDDS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml \
           ROS_DOMAIN_ID=$(ROS_DOMAIN_ID)

PYTEST_ARGS ?=

.PHONY: all venv test demo follow-demo clean-build
all: test

venv: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) ./scripts/setup_venv.sh
	touch $@

# pytest's own exit code goes through (5 = no tests collected is a failure too).
test: $(STAMP)
	@echo ">>> ROS_DOMAIN_ID=$(ROS_DOMAIN_ID)"
	$(ROS_ENV) $(PY) -m pytest test/ $(PYTEST_ARGS)

# The main job: the node (config/cract.yaml, built-in default model) fed a real sequence as a
# camera (../shared/data when present, else a generated one); DEMO_ARGS="--source PATH" takes a
# video, an image folder or a rosbag2. Output under runs/demo/. Offline, no ROS: python -m cract_core.demo
demo: $(STAMP)
	$(ROS_ENV) $(PY) -m cract_ros.tools.demo $(DEMO_ARGS)

# The follow loop closed: tracker node + follower + a simulated camera on a moving vehicle, over DDS;
# plots and contact sheets under runs/follow_demo/. FOLLOW_ARGS="--rates 10 --redesignate-after none".
follow-demo: $(STAMP)
	$(ROS_ENV) $(PY) -m cract_ros.follow.demo $(FOLLOW_ARGS)

# Removes the cmake build tree (not .venv): the next make rebuilds msg/srv.
clean-build:
	rm -rf build/venv build/venv-cmake.log $(STAMP)
