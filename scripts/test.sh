#!/usr/bin/env bash
# Run the whole test suite (README command 2; .ci/run calls exactly this).
# Creates / updates the virtual environment first, then runs pytest inside the
# project's ROS environment (loopback-only DDS, own ROS_DOMAIN_ID and ROS_LOG_DIR).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/runtime/test_hierarchy.py -x`.
# `--fast` (first argument) runs only the pure tests, without tests/integration and `slow` ones:
# the inner loop while editing; CI runs everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "${ROOT}/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "${ROOT}/scripts/ros_env.sh"
cd "${ROOT}"
if [[ "${1:-}" == "--fast" ]]; then
  shift
  set -- -m "not integration and not slow" "$@"
fi
# pyproject.toml's testpaths is tests/runtime (what `colcon test` collects); without path arguments
# this script collects every test folder.
exec "${HISEG_VENV}/bin/python" -m pytest -o testpaths=tests "$@"
