"""The inference core: numpy images in, labels and keypoints out (PyTorch, NumPy, OpenCV; no ROS).

Segmenter (pre-processing, network, labels at input or network resolution, colour mask,
overlay) and PoseEstimator (person boxes from labels, batched affine crops, heatmap decoding
back to image pixels), with what they are built from: model loading for a device and precision,
input normalisation, crop geometry, keypoint decoding, drawing, timing helpers and the default
class/keypoint vocabularies.

May import segpp_ros.model and the package data (segpp_ros.weights); never ROS, training or the
command-line tools. The ROS node (segpp_ros.ros) is a thin adapter over this package.
"""
from .loader import PRECISIONS, load_for_inference, resolve_device
from .pose import PersonBox, PersonPose, PoseEstimator, PoseResult, person_boxes, whole_frame_box
from .segmenter import Segmentation, Segmenter, default_palette, network_size

__all__ = [
    "PRECISIONS", "load_for_inference", "resolve_device",
    "PersonBox", "PersonPose", "PoseEstimator", "PoseResult", "person_boxes", "whole_frame_box",
    "Segmentation", "Segmenter", "default_palette", "network_size",
]
