"""package.xml declares what the runtime package imports: every third-party module imported anywhere
under hiseg_ros/ is a declared rosdep key or in the pip list package.xml documents (not resolvable by
rosdep), and nothing declared is left unused by the package or its launch file."""

from __future__ import annotations

import ast
import re
import sys

from catkin_pkg.package import parse_package

from training import REPO

#: module -> rosdep key, where they differ (ROS packages import under their own name)
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml"}
#: module -> pip distribution, for the pip list of package.xml
PIP_NAMES = {"cuda": "cuda-python", "google": "onnx"}  # google.protobuf comes with onnx
LAUNCH_STARTS = {"launch", "launch_ros", "ament_index_python", "ros2bag", "rosbag2", "rviz2", "rviz_default_plugins"}


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "hiseg_ros").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("hiseg_ros", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_runtime_import_is_declared_or_a_documented_pip_dependency():
    package = parse_package(REPO / "package.xml")
    declared = {d.name for d in package.exec_depends}
    pip = set(re.search(r"pip: ([^\n]+)", (REPO / "package.xml").read_text()).group(1).split())
    imports = _imports()
    assert {"rclpy", "onnxruntime", "numpy"} <= set(imports), sorted(imports)  # the walk sees the package
    missing = {
        module: files
        for module, files in imports.items()
        if ROSDEP_KEYS.get(module, module) not in declared and PIP_NAMES.get(module, module) not in pip
    }
    assert not missing, f"imported but neither in package.xml nor in its pip list: {missing}"
    used = {ROSDEP_KEYS.get(m, m) for m in imports} | LAUNCH_STARTS | {"std_msgs", "builtin_interfaces"}
    assert declared <= used, f"declared but not used: {sorted(declared - used)}"
    assert "visualization_msgs" not in declared and "rcl_interfaces" in declared
    assert {"ros2bag", "rviz2"} <= declared  # what launch/hiseg.launch.py runs
