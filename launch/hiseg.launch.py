"""Launch the hiseg_ros segmentation node, optionally with rosbag playback and RViz.

    ros2 launch hiseg_ros hiseg.launch.py model_path:=/path/iv2018.onnx image:=/camera/image_raw
    ros2 launch hiseg_ros hiseg.launch.py model_path:=... bag:=/data/drive_bag use_sim_time:=true rviz:=true

A multi-camera vehicle includes this file once per camera with its own ``namespace``
(``namespace:=front image:=/front/image_raw``): the node is ``/front/segmentation_node`` and
publishes under it, and a relative ``image`` topic resolves inside the namespace. Every instance
reads the same ``params_file`` (config/hiseg.yaml is keyed ``/**``, so any node name and namespace
match it); ``model_path``, ``use_compressed`` and ``use_sim_time`` override the file's values,
``image`` is remapped to the camera topic and ``log_level`` sets the node's log level (RViz's
config shows the node without a namespace). A ``bag`` is
played in a loop with ``--clock``, so a node started with ``use_sim_time:=true`` runs on the bag's
time. training/evaluation/bags/node_process.py (``launch_ros_args``) builds the same command line
for tests; tests/training/evaluation/test_launch_file.py keeps the two in step. Needs launch / launch_ros
(a ROS 2 installation).
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
    namespace = LaunchConfiguration("namespace")
    model_path = LaunchConfiguration("model_path")
    image = LaunchConfiguration("image")
    use_compressed = LaunchConfiguration("use_compressed")
    use_sim_time = LaunchConfiguration("use_sim_time")
    log_level = LaunchConfiguration("log_level")
    params_file = LaunchConfiguration("params_file")
    bag = LaunchConfiguration("bag")
    rviz = LaunchConfiguration("rviz")
    rviz_config = LaunchConfiguration("rviz_config")

    return LaunchDescription(
        [
            DeclareLaunchArgument("namespace", default_value="", description="Node namespace, one per camera"),
            DeclareLaunchArgument("model_path", description="Exported model (.onnx) for the node"),
            DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Camera image topic"),
            DeclareLaunchArgument(
                "use_compressed",
                default_value="false",
                choices=["true", "false"],
                description="Subscribe to <image>/compressed (sensor_msgs/CompressedImage)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", choices=["true", "false"], description="Follow /clock"
            ),
            DeclareLaunchArgument(
                "log_level",
                default_value="info",
                choices=["debug", "info", "warn", "error", "fatal"],
                description="The node's log level",
            ),
            DeclareLaunchArgument(
                "params_file", default_value=str(share / "config" / "hiseg.yaml"), description="Node parameters"
            ),
            DeclareLaunchArgument(
                "bag", default_value="", description="rosbag2 to play in a loop with --clock ('' = none)"
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/hiseg.rviz"),
            DeclareLaunchArgument(
                "rviz_config", default_value=str(share / "config" / "hiseg.rviz"), description="RViz configuration"
            ),
            Node(
                package="hiseg_ros",
                executable="segmentation_node",
                name="segmentation_node",
                namespace=namespace,
                output="screen",
                ros_arguments=["--log-level", log_level],
                parameters=[
                    params_file,
                    {"model_path": model_path, "use_compressed": use_compressed, "use_sim_time": use_sim_time},
                ],
                remappings=[("image", image)],
            ),
            ExecuteProcess(
                cmd=["ros2", "bag", "play", bag, "--loop", "--clock"],
                output="screen",
                condition=IfCondition(PythonExpression(["'", bag, "' != ''"])),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", rviz_config],
                parameters=[{"use_sim_time": use_sim_time}],
                condition=IfCondition(rviz),
            ),
        ]
    )
