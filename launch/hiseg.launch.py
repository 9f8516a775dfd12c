"""Launch the hiseg_ros segmentation node, optionally with rosbag playback and RViz.

    ros2 launch hiseg_ros hiseg.launch.py model_path:=/path/iv2018.onnx image:=/camera/image_raw
    ros2 launch hiseg_ros hiseg.launch.py model_path:=... bag:=/data/drive_bag rviz:=true

The node reads config/hiseg.yaml (``params_file``); ``model_path`` overrides the file's value and
``image`` is remapped to the camera topic. Needs launch / launch_ros (a ROS 2 installation).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("hiseg_ros"))
    model_path = LaunchConfiguration("model_path")
    image = LaunchConfiguration("image")
    params_file = LaunchConfiguration("params_file")
    bag = LaunchConfiguration("bag")
    rviz = LaunchConfiguration("rviz")
    rviz_config = LaunchConfiguration("rviz_config")

    return LaunchDescription(
        [
            DeclareLaunchArgument("model_path", description="Exported model (.onnx) for the node"),
            DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Camera image topic"),
            DeclareLaunchArgument(
                "params_file", default_value=str(share / "config" / "hiseg.yaml"), description="Node parameters"
            ),
            DeclareLaunchArgument("bag", default_value="", description="rosbag2 to play in a loop ('' = none)"),
            DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/hiseg.rviz"),
            DeclareLaunchArgument(
                "rviz_config", default_value=str(share / "config" / "hiseg.rviz"), description="RViz configuration"
            ),
            Node(
                package="hiseg_ros",
                executable="segmentation_node",
                name="segmentation_node",
                output="screen",
                parameters=[params_file, {"model_path": model_path}],
                remappings=[("image", image)],
            ),
            ExecuteProcess(
                cmd=["ros2", "bag", "play", bag, "--loop"],
                output="screen",
                condition=IfCondition(PythonExpression(["'", bag, "' != ''"])),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", rviz_config],
                condition=IfCondition(rviz),
            ),
        ]
    )
