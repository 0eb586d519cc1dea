"""Launch the segpp node.

    ros2 launch segpp segpp.launch.py image:=/camera/image_raw
    ros2 launch segpp segpp.launch.py image:=/camera/image_raw transport:=compressed device:=cuda
    ros2 launch segpp segpp.launch.py params_file:=/path/my_segpp.yaml namespace:=front
    ros2 launch segpp segpp.launch.py cameras:=front,rear     # front/image and rear/image, one model
    ros2 launch segpp segpp.launch.py image:=/camera/image_raw rviz:=true   # and RViz2 with config/segpp.rviz
    ros2 launch segpp segpp.launch.py image:=/camera/image_raw use_sim_time:=true   # a bag played with --clock
    ros2 launch segpp segpp.launch.py image:=/cam/image detections:=/yolo/detections   # with a detector's boxes
    ros2 launch segpp segpp.launch.py image:=/camera/image_raw backend:=torch    # PyTorch instead of OpenVINO
    ros2 launch segpp segpp.launch.py image:=/camera/color/image_raw depth:=/camera/aligned_depth_to_color/image_raw \
        params_file:=rgbd.yaml                                              # with depth.enable: true in it

The camera_info of the image is its sibling (image:=/camera/image_raw -> /camera/camera_info,
image_transport's convention) unless camera_info:=... names another.

Launch arguments left empty keep the value of the params file (config/segpp.yaml by default).
lifecycle:=true starts the managed node instead (unconfigured until `ros2 lifecycle set /segpp
configure`; autostart:=true configures and activates it at start). With respawn:=true (the default) a node process that dies (a crash, a kill) is started again
after respawn_delay seconds; one that refuses to start (exit code 78: a bad parameter or weights
file, which a restart cannot fix) or exits cleanly is not.
"""
import os
import shutil

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

PACKAGE = "segpp"
EXECUTABLE = "segpp_node"
NODE_NAME = "segpp"
EXIT_REFUSED = 78  # the node's exit code when it refuses to start (sysexits' EX_CONFIG)
# launch arguments that override a node parameter of the same name when given
PARAMETER_ARGUMENTS = {
    "weights": "segmentation weights file (empty: the params file's, by default the embedded model)",
    "device": "auto, cpu, cuda or cuda:N (empty: the params file's)",
    "backend": "auto, torch or openvino (empty: the params file's, by default auto: openvino on the CPU)",
    "transport": "raw (image) or compressed (image/compressed) (empty: the params file's)",
}


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _node(context, *args, **kwargs):
    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    cameras = [c.strip() for c in LaunchConfiguration("cameras").perform(context).split(",") if c.strip()]
    if cameras:
        overrides["cameras"] = cameras
    sim_time = LaunchConfiguration("use_sim_time").perform(context)
    if sim_time:
        overrides["use_sim_time"] = _true(sim_time)
    remappings = [("image", LaunchConfiguration("image")),
                  ("image/compressed", [LaunchConfiguration("image"), "/compressed"])]
    for name in ("camera_info", "detections", "depth", "depth_camera_info"):
        topic = LaunchConfiguration(name).perform(context)
        if topic:
            remappings.append((name, topic))
    node_kwargs = dict(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )
    if _true(LaunchConfiguration("lifecycle").perform(context)):
        autostart = _true(LaunchConfiguration("autostart").perform(context))
        node = LifecycleNode(**node_kwargs, arguments=["--lifecycle", *(["--autostart"] if autostart else [])])
    else:
        node = Node(**node_kwargs)
    if not _true(LaunchConfiguration("respawn").perform(context)):
        return [node]
    delay = float(LaunchConfiguration("respawn_delay").perform(context))

    def respawn(event, launch_context):
        # launch's own respawn restarts whatever the exit code; a refusal to start would loop
        if launch_context.is_shutdown or event.returncode in (0, EXIT_REFUSED):
            return None
        return [LogInfo(msg=f"segpp: the node exited with code {event.returncode}; starting it again in "
                            f"{delay:g} s (respawn:=false turns this off)"),
                TimerAction(period=delay, actions=[OpaqueFunction(function=_node)])]

    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=respawn))]


def _rviz(context, *args, **kwargs):
    """RViz2 with config/segpp.rviz when rviz:=true and RViz2 is installed; a note otherwise."""
    if not _true(LaunchConfiguration("rviz").perform(context)):
        return []
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        if shutil.which("rviz2") is None:
            return [LogInfo(msg="segpp: rviz:=true but RViz2 is not installed (apt install ros-$ROS_DISTRO-rviz2); "
                                "the node runs without it")]
    config = os.path.join(get_package_share_directory(PACKAGE), "config", "segpp.rviz")
    return [Node(package="rviz2", executable="rviz2", name="segpp_rviz", arguments=["-d", config], output="screen")]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "segpp.yaml")
    arguments = [
        DeclareLaunchArgument("image", default_value="image", description="input image topic (base name)"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="camera_info topic of the image (empty: the image topic's sibling "
                                          "camera_info, image_transport's convention)"),
        DeclareLaunchArgument("detections", default_value="",
                              description="a detector's vision_msgs/Detection2DArray topic, used with "
                                          "pose.box_source detections (empty: detections, relative)"),
        DeclareLaunchArgument("depth", default_value="",
                              description="an aligned depth image topic (16UC1 or 32FC1), used with depth.enable "
                                          "(empty: depth, relative)"),
        DeclareLaunchArgument("depth_camera_info", default_value="",
                              description="camera_info of the depth image (empty: the depth topic's sibling "
                                          "camera_info)"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: the node's clock follows /clock (a bag played with --clock, a "
                                          "simulator) (empty: the params file's, by default false)"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="several cameras through one model, comma-separated (front,rear): each "
                                          "subscribes <name>/image and publishes ~/<name>/label, ... (empty: the "
                                          "params file's, by default one camera on image)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("respawn", default_value="true",
                              description="start the node again when its process dies (not when it refuses to "
                                          "start or exits cleanly)"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a respawn"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="a managed (lifecycle) node: unconfigured until configured with "
                                          "ros2 lifecycle set"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="with lifecycle:=true, configure and activate at start"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start RViz2 with config/segpp.rviz (overlay, labels, skeleton "
                                          "markers) when RViz2 is installed"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text)
                  for name, text in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node), OpaqueFunction(function=_rviz)])
