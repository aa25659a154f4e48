"""vpr-edge loop closure (ROS 2). Untested here: the PyPI ROS 2 wheels have no ros2 launch.

    ros2 launch vpr_edge.launch.py model:=/path/model.onnx image:=/camera/color/image_raw
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

HERE = Path(__file__).resolve().parent
NODE = HERE.parent / "vpr_edge_node.py"
PARAMS = HERE.parent / "config" / "ros2_params.yaml"


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    return LaunchDescription([
        DeclareLaunchArgument("model", description="exported model (.onnx or .engine)"),
        DeclareLaunchArgument("map_dir", default_value="", description="map directory"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw"),
        DeclareLaunchArgument("odom", default_value="/odom"),
        DeclareLaunchArgument("params", default_value=str(PARAMS)),
        ExecuteProcess(
            cmd=["python3", str(NODE), "--ros-args", "--params-file", arg("params"),
                 # quoted: rcl refuses an empty `map_dir:=` (the default: no map directory)
                 "-p", ["model:=", arg("model")], "-p", ["map_dir:='", arg("map_dir"), "'"],
                 # with use_compressed: true the node takes <image>/compressed
                 "-r", ["image:=", arg("image")], "-r", ["odom:=", arg("odom")]],
            output="screen"),
    ])
