"""The ROS 2 layer: rclpy adapters over the inference core.

The segpp node (node.py) and its keypoint stage (pose_stage.py); every parameter declared once
(params.py); Image/CompressedImage <-> numpy (conversions.py); keypoint and marker messages
(keypoint_msgs.py); the keep-latest slot, worker threads and rolling statistics (realtime.py);
the ROS environment of a PyPI venv (env.py); and the tools that drive a graph: the node as a
process with a probe (graph.py), a camera (camera.py), a sink (sink.py), the end-to-end
benchmark (bench.py) and spinning them (spin.py).

May import segpp_ros.model, segpp_ros.inference and the package data; never the training
package or the command-line tools. Importing this package itself loads no rclpy: modules that
need it import it themselves (env.py must run before rclpy is imported).
"""
