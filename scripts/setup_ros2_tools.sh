#!/usr/bin/env bash
# Test environment only: put into .venv what a ROS 2 install gives a robot's developer, so that the
# tests can run the robot-stack path for real (colcon build, ros2 launch, ros2 run, ros2 lifecycle):
#   1. colcon (requirements-ros2-tools.txt, pinned, from the package index)
#   2. the vendored pure-Python launch, launch_ros and ros2cli packages (../shared/ros2/vendor)
#   3. composition_interfaces (launch_ros imports it), an ordinary interface build like msg/srv
# The recipe is ../shared/ros2/vendor/README.md's. setup_venv.sh calls this after the package's own
# msg/srv build; nothing here is a dependency of cract for users who have ROS 2 installed.
# Usage: scripts/setup_ros2_tools.sh [VENV]   (default: .venv at the repository root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
V=${1:-$ROOT/.venv}
VENDOR=$ROOT/../shared/ros2/vendor
PACKAGES="launch launch_xml launch_yaml launch_ros ros2launch rosidl_runtime_py ros2cli ros2pkg ros2run
          ros2node ros2service ros2topic ros2param ros2lifecycle"
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

if [ ! -d "$VENDOR" ]; then
    echo "!!! $VENDOR not found: launch, launch_ros and ros2cli are not installed (the colcon workspace tests need them)" >&2
    exit 1
fi

echo ">>> colcon and the vendored tools' dependencies (requirements-ros2-tools.txt)"
"$V/bin/python" -m pip install --disable-pip-version-check -q -r requirements-ros2-tools.txt 2>&1 | quiet

echo ">>> launch, launch_ros, ros2cli from $VENDOR"
# pip builds in the source tree (egg-info, build/) and CI's ../shared is read-only: a copy
S=$ROOT/build/ros2-vendor
rm -rf "$S" && mkdir -p "$ROOT/build" && cp -r "$VENDOR" "$S" && chmod -R u+w "$S"
paths=()
for p in $PACKAGES; do paths+=("$S/$p"); done
"$V/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation "${paths[@]}" 2>&1 | quiet

echo ">>> composition_interfaces into $V"
LOG=$ROOT/build/composition_interfaces.log
AMENT_PREFIX_PATH=$V cmake -S "$S/composition_interfaces" -B "$ROOT/build/composition_interfaces" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCMAKE_PREFIX_PATH="$V" \
    -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" > "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
cmake --build "$ROOT/build/composition_interfaces" -j2 >> "$LOG" 2>&1 || { tail -50 "$LOG"; exit 1; }
cmake --install "$ROOT/build/composition_interfaces" >> "$LOG" 2>&1 || { tail -50 "$LOG"; exit 1; }

# the same check as setup_venv.sh's: a broken install fails here, not in a test
AMENT_PREFIX_PATH=$V "$V/bin/python" -c 'import launch, launch_ros.actions, ros2cli, ros2lifecycle, colcon_core, colcon_ros'
"$V/bin/ros2" --help > /dev/null
"$V/bin/colcon" --help > /dev/null
echo ">>> ros2 and colcon ready in $V"
