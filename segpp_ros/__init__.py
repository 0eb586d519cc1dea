"""segpp: SegFormer++ semantic segmentation and keypoints for ROS 2.

Layers, each importing only from those before it (test/test_layout.py checks):
  model/      pure PyTorch: encoder, heads, merge strategies, checkpoints
  inference/  the inference core: Segmenter, PoseEstimator, pre-processing, decoding, drawing (no ROS)
  training/   synthetic data, training, metrics and the offline studies (no ROS)
  ros/        rclpy adapters: the node, its pose stage, parameters, messages, threads, graph tools
  cli/        the segpp-* commands: argument parsing and calls
weights/ and samples/ are package data (the embedded models, the demo's camera sequence).
training/ and ros/ are siblings: neither imports the other.
"""
__version__ = "0.1.0"
