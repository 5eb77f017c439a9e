#!/usr/bin/env bash
# Create or refresh .venv at the repository root with everything cract needs:
#   1. pip install -r requirements.txt (pinned; quick when already satisfied)
#   2. point the ROS wheels' exported CMake files at this interpreter's include dirs
#      (they name the wheel builder's /opt/python/cp3xx-cp3xx paths; see shared/ros2/README.md)
#   3. build this package's msg/srv (cract/msg, cract/srv) with cmake and install them into .venv
#   4. pip install -e . so that the console scripts (cract-tracker-node, ...) exist
#   5. test environment: colcon, and the vendored launch / launch_ros / ros2cli with
#      composition_interfaces (scripts/setup_ros2_tools.sh), for test/test_colcon_workspace.py
# The Makefile runs this only when one of its inputs changed (stamp: .venv/.cract-stamp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
V=$ROOT/.venv
PYTHON=${PYTHON:-python3}

if [ ! -x "$V/bin/python" ]; then
    echo ">>> creating $V with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$V"
fi

# This machine's pip config names local file:// indices that lack most projects; pip warns once
# per project and index. The filter keeps the log readable; pip's own exit status still counts
# (pipefail; the filter itself never fails).
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

echo ">>> pip install -r requirements.txt"
"$V/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt 2>&1 | quiet
# vot-toolkit depends on opencv-python, whose cv2 replaces the contrib build's when pip installs it
# after (an existing venv gaining vot-toolkit): the baselines' CSRT / KCF / MIL would be gone.
if ! "$V/bin/python" -c 'import cv2; cv2.TrackerCSRT.create' 2>/dev/null; then
    echo ">>> cv2 lacks the contrib trackers: reinstalling opencv-contrib-python-headless over opencv-python"
    OPENCV_CONTRIB=$(grep -E '^opencv-contrib-python-headless==' requirements.txt | cut -d' ' -f1)
    "$V/bin/python" -m pip install --disable-pip-version-check -q --force-reinstall --no-deps "$OPENCV_CONTRIB" 2>&1 | quiet
fi

echo ">>> fixing /opt/python include paths in the ROS wheels' CMake files"
PYINC=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$V/bin/python" -c 'import numpy; print(numpy.get_include())')
# Safe to repeat; needed again after any reinstall of a ros-* message wheel.
# (grep finds nothing once fixed: exit code 1 is fine there)
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/(include|lib)' "$V/share" --include='*.cmake' || true; } | xargs -r sed -i -E \
    "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g; s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g"

echo ">>> building msg/srv into $V"
export AMENT_PREFIX_PATH=$V   # without it: "No 'rosidl_typesupport_c' found"
BUILD=$ROOT/build/venv
mkdir -p "$ROOT/build"
# CRACT_INSTALL_PYTHON=OFF: the editable install below provides cract_core/cract_ros, so the
# venv never holds a second, stale copy of them.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" \
    -DCRACT_INSTALL_PYTHON=OFF > "$ROOT/build/venv-cmake.log" 2>&1 || { cat "$ROOT/build/venv-cmake.log"; exit 1; }
cmake --build "$BUILD" -j2 >> "$ROOT/build/venv-cmake.log" 2>&1 || { tail -50 "$ROOT/build/venv-cmake.log"; exit 1; }
cmake --install "$BUILD" >> "$ROOT/build/venv-cmake.log" 2>&1 || { tail -50 "$ROOT/build/venv-cmake.log"; exit 1; }

echo ">>> pip install -e . (no deps: they came from requirements.txt)"
"$V/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2>&1 | quiet

# What a ROS 2 install gives a robot's developer (colcon, ros2 launch / run / lifecycle): only for
# the tests that run the robot-stack path; cract itself does not need it.
./scripts/setup_ros2_tools.sh "$V"

# A last check that the pieces import together, so a broken venv fails here and not in a test.
"$V/bin/python" -c 'import rclpy, cv2, torch, cract_core; from cract.msg import TrackedObject; from cract.srv import SetTarget'
echo ">>> .venv ready"
