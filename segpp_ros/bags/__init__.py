"""Recorded bags through the frame pipeline, with no ROS graph (segpp-bag).

runner.py reads a ROS 2 (sqlite3, MCAP) or ROS 1 bag with the rosbags library, runs one image
topic through the same frame pipeline as the node (segpp_ros.inference.pipeline) and writes the
node's messages (built by segpp_ros.ros.conversions and keypoint_msgs) into a new bag, or the
overlays into an MP4.

Above the node's runtime: may import segpp_ros.model, inference and ros (its message builders);
never the harness, training or the command-line tools.
"""
