"""segpp-node (and `ros2 run segpp segpp_node`): the segpp ROS 2 node.

Light on purpose: SIGINT and SIGTERM are taken over before torch, rclpy and the model are
imported, so a Ctrl-C at any moment of a start-up that takes seconds ends the process cleanly
(exit 0, no traceback); --help is answered before anything starts DDS.
"""
from __future__ import annotations

import sys

USAGE = """usage: segpp_node [-h] [--lifecycle [--autostart]] [--ros-args ...]

The segpp ROS 2 node: sensor_msgs/Image on `image` (or CompressedImage on `image/compressed`
with transport:=compressed) in; ~/label, ~/color, ~/overlay, ~/label_info, ~/keypoints,
~/keypoint_info, ~/markers and /diagnostics out. Every parameter, with its default and
description, is in the package's config/segpp.yaml (also: segpp-params --markdown).

    segpp_node --ros-args --params-file config/segpp.yaml -r image:=/camera/image \\
        -p merge.preset:=fast

--lifecycle   a managed node: unconfigured until `ros2 lifecycle set /segpp configure`, then
              activate / deactivate / cleanup / shutdown (see segpp_ros/ros/lifecycle.py)
--autostart   with --lifecycle: configure and activate at start
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    ours = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in ours or "--help" in ours:
        print(USAGE, end="")  # before rclpy.init: asking for help must not start DDS
        return 0
    from ..ros.spin import StopSignals

    signals = StopSignals().install()
    unknown = [a for a in ours if a not in ("--lifecycle", "--autostart")]
    if unknown or ("--autostart" in ours and "--lifecycle" not in ours):
        print(f"segpp_node: unknown or misplaced arguments {unknown or ['--autostart']}; ROS arguments go after "
              "--ros-args\n" + USAGE, file=sys.stderr, end="")
        return 2
    from ..harness.faults import hooks_from_environment
    from ..ros.process import run  # the heavy imports: torch, rclpy, OpenCV, the model

    return run(args, signals, lifecycle="--lifecycle" in ours, autostart="--autostart" in ours,
               hooks=hooks_from_environment())


if __name__ == "__main__":
    sys.exit(main())
