#!/usr/bin/env bash
# Set up the development environment in .venv (everything a developer needs), then run the
# main job. Usage: bash scripts/setup.sh [--no-demo] [--no-ros]
#   PYTHON=python3.11          interpreter for the venv (default: python3)
#   TORCH_PACKAGES="..."       torch pins (default: the CPU-usable build this project tests)
#   ROS: Debian's ROS 1 Python packages (apt) + .venv-ros1, and the ros-rclpy wheels from
#   PyPI in .venv-ros2, for the ROS node tests (--no-ros skips both).
set -euo pipefail
cd "$(dirname "$0")/.."

run_demo=1
install_ros=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) run_demo=0 ;;
    --no-ros) install_ros=0 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
# timm needs torchvision; torch 2.14.1 + torchvision 0.29.1 is the pair available here.
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}

step() { printf '\n==> %s\n' "$*"; }

step "creating .venv with $($PYTHON --version)"
"$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

step "installing $TORCH_PACKAGES"
# shellcheck disable=SC2086
$PIP install --quiet $TORCH_PACKAGES

step "installing vpr-edge (editable) with extras cpu, train, export, plugin, verify, ros, bench, dev"
$PIP install --quiet -e ".[cpu,train,export,plugin,verify,ros,bench,dev]"

step "installing TensorRT-RTX (builds engines without a GPU; used by the export tests)"
$PIP install --quiet "tensorrt-rtx-cu13" || echo "TensorRT-RTX not installable here: engine tests will skip"

# ROS 1 Noetic's Python side, as Debian packages it (a real rosmaster for tests/ros/).
ROS1_PACKAGES="python3-rospy python3-rosmaster python3-rosgraph python3-roslaunch
  python3-rostest python3-rosbag python3-rostopic python3-genpy python3-sensor-msgs
  python3-std-msgs python3-geometry-msgs python3-nav-msgs python3-std-srvs"
ROS2_WHEELS="ros-rclpy ros-rmw-fastrtps-cpp ros-std-msgs ros-sensor-msgs ros-geometry-msgs
  ros-nav-msgs ros-std-srvs"
install_ros1() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || return 1
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $ROS1_PACKAGES >/dev/null 2>&1 || {
    $sudo apt-get update -qq && \
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $ROS1_PACKAGES >/dev/null
  }
}
if [ "$install_ros" = 1 ]; then
  step "installing ROS 1 (Debian packages) and .venv-ros1 for the ROS node tests"
  if install_ros1; then
    /usr/bin/python3 -m venv --system-site-packages .venv-ros1
    .venv-ros1/bin/python -m pip install --quiet --upgrade pip
    .venv-ros1/bin/python -m pip install --quiet -e ".[cpu]"
  else
    echo "ROS 1 packages not installable here (needs apt-get and root/sudo): tests/ros will skip"
  fi
  step "installing ROS 2 rclpy (unofficial ros-* wheels from PyPI) into .venv-ros2"
  "$PYTHON" -m venv .venv-ros2
  .venv-ros2/bin/python -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  .venv-ros2/bin/python -m pip install --quiet $ROS2_WHEELS -e ".[cpu]" || \
    echo "ROS 2 wheels not installable here: the ROS 2 node tests will skip"
fi

if [ "$run_demo" = 1 ]; then
  step "running the main job (scripts/demo.sh)"
  bash scripts/demo.sh
fi
step "done: run the tests with  .venv/bin/python -m pytest"
