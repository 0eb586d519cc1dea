"""segpp: SegFormer++ semantic segmentation and keypoints for ROS 2."""
__version__ = "0.1.0"
