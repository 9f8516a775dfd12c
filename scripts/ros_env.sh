# shellcheck shell=bash
# Source this before anything that starts DDS (tests, CI, demo, benchmarks).
#
# It keeps every DDS byte on loopback, gives
# the run its own ROS_DOMAIN_ID and a log directory inside the work tree, and
# makes the virtual environment visible to ament_index.
#   source scripts/ros_env.sh            # uses .venv next to this script
#   HISEG_VENV=/path/to/venv source scripts/ros_env.sh
_hiseg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HISEG_ROOT="${_hiseg_root}"
export HISEG_VENV="${HISEG_VENV:-${_hiseg_root}/.venv}"

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="${_hiseg_root}/config/dds/fastdds_loopback.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
# One domain per run, so concurrent runs on one machine never see each other.
# Override with HISEG_ROS_DOMAIN_ID; 1..100 stays inside the default port range.
export ROS_DOMAIN_ID="${HISEG_ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
export ROS_LOG_DIR="${ROS_LOG_DIR_OVERRIDE:-${_hiseg_root}/.ros/log}"
mkdir -p "${ROS_LOG_DIR}"
case ":${AMENT_PREFIX_PATH:-}:" in
  *":${HISEG_VENV}:"*) ;;
  *) export AMENT_PREFIX_PATH="${HISEG_VENV}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}" ;;
esac
unset _hiseg_root
