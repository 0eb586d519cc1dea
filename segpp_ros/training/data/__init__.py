"""Deterministic synthetic data: street scenes with labels, persons with COCO-17 keypoints (numpy, OpenCV)."""
