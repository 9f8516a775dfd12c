"""ament_python build of the hiseg_ros runtime package.

Only ``hiseg_ros`` (what runs on the vehicle) is installed; ``training/`` is the
workstation side and runs from the source tree (``python -m training.<command>``).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hiseg_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/hierarchies", glob("config/hierarchies/*.yaml")),
        (f"share/{PACKAGE}/config/label_remaps", glob("config/label_remaps/*.yaml")),
        (f"share/{PACKAGE}/config/dds", glob("config/dds/*.xml")),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},  # colcon test then runs pytest (tests/runtime: pyproject.toml testpaths)
    zip_safe=True,
    maintainer="hiseg_ros maintainers",
    maintainer_email="hiseg-ros@example.com",
    description="Hierarchical multi-dataset semantic segmentation as a ROS 2 node",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "hierarchy_info = hiseg_ros.hierarchy_cli:main",
            "segmentation_node = hiseg_ros.node:main",
            "segmentation_lifecycle_node = hiseg_ros.lifecycle_node:main",
        ],
    },
)
