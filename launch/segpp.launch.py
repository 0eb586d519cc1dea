"""Launch the segpp node.

    ros2 launch segpp segpp.launch.py image:=/camera/image_raw
    ros2 launch segpp segpp.launch.py image:=/camera/image_raw transport:=compressed device:=cuda
    ros2 launch segpp segpp.launch.py params_file:=/path/my_segpp.yaml namespace:=front

Launch arguments left empty keep the value of the params file (config/segpp.yaml by default).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "segpp"
EXECUTABLE = "segpp_node"
NODE_NAME = "segpp"
# launch arguments that override a node parameter of the same name when given
PARAMETER_ARGUMENTS = {
    "weights": "segmentation weights file (empty: the params file's, by default the embedded model)",
    "device": "auto, cpu, cuda or cuda:N (empty: the params file's)",
    "transport": "raw (image) or compressed (image/compressed) (empty: the params file's)",
}


def _node(context, *args, **kwargs):
    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"])],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "segpp.yaml")
    arguments = [
        DeclareLaunchArgument("image", default_value="image", description="input image topic (base name)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text)
                  for name, text in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
