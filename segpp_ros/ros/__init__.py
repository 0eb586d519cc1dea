"""The ROS 2 layer: the segpp node's runtime, an rclpy adapter over the frame pipeline.

The node (node.py: parameters, QoS, keep-latest slot, inference thread, publishing,
diagnostics), its managed form (lifecycle.py), its process (process.py: init, spin, exit
codes), its keypoint stage (pose_stage.py) and cameras (cameras.py); every parameter declared
once (params.py); Image/CompressedImage <-> numpy (conversions.py); keypoint and marker messages
(keypoint_msgs.py); the keep-latest slot, worker threads and rolling statistics (realtime.py);
the watchdog (health.py); spinning until stopped (spin.py); the ROS environment of a PyPI venv
(env.py). Only the node's runtime: tools that drive a graph live in segpp_ros.harness.

May import segpp_ros.model, segpp_ros.inference and the package data; never training, bags,
the harness or the command-line tools. Importing this package itself loads no rclpy: modules that
need it import it themselves (env.py must run before rclpy is imported).
"""
