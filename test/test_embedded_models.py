"""The shipped default models load through load_model and still do their job.

Thresholds sit well below what the fidelity study measured (README), so a broken model,
loader or pre-processing cannot ship, while normal numerical noise never fails the test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segpp_ros.inference import Segmenter
from segpp_ros.inference.keypoints import decode_heatmaps
from segpp_ros.inference.preprocess import to_tensor
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, COCO_KEYPOINTS
from segpp_ros.model import load_model
from segpp_ros.training.data.pose import render_pose_sample
from segpp_ros.training.data.scenes import render_scene
from segpp_ros.training.metrics import confusion_matrix, keypoint_boxes, mean_iou, pck
from segpp_ros.training.train import HELD_OUT_SEED_BASE
from segpp_ros.weights import DEFAULT_WEIGHTS, default_weights

SEG_MIN_MIOU = 48.0      # measured 59.9 on these two scenes (62.7 over the 20-scene study)
POSE_MIN_PCK10 = 50.0    # measured 63.6 on these 24 crops (61.4 over the 256-crop study)


def test_embedded_files_are_small_fp16_safetensors() -> None:
    for task, path in DEFAULT_WEIGHTS.items():
        assert path.is_file(), f"embedded {task} model missing"
        assert path.stat().st_size <= 8 * 2**20
        assert path.read_bytes()[8:9] == b"{"          # safetensors header, never a pickle


def test_segmentation_model_metadata_and_accuracy() -> None:
    seg = Segmenter(device="cpu")
    assert seg.model.spec.name == "b0" and seg.model.task == "seg"
    assert seg.classes == list(CITYSCAPES_CLASSES) and len(seg.palette) == 19
    conf = np.zeros((19, 19), np.int64)
    for i in range(2):
        scene = render_scene(HELD_OUT_SEED_BASE + i, 512, 1024)
        conf += confusion_matrix(seg(scene.image).labels, scene.labels, 19)
    assert mean_iou(conf) >= SEG_MIN_MIOU


def test_pose_model_metadata_and_accuracy() -> None:
    model = load_model(default_weights("pose"), task="pose")
    assert model.keypoints == list(COCO_KEYPOINTS) and model.flip_pairs and model.skeleton
    input_hw = tuple(model.meta["input_size"])
    samples = [render_pose_sample(HELD_OUT_SEED_BASE + i, input_hw) for i in range(24)]
    with torch.inference_mode():
        heatmaps = model(to_tensor(np.stack([s.image for s in samples])))
    pred = decode_heatmaps(heatmaps.numpy())
    truth = np.stack([s.keypoints for s in samples])
    assert pck(pred, truth, keypoint_boxes(truth), 0.1) >= POSE_MIN_PCK10


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_training_provenance_is_recorded(task: str) -> None:
    training = load_model(default_weights(task)).meta["training"]
    assert training["steps"] > 0 and training["commit"] and training["command"].startswith("segpp-train")
    assert training["seed"] >= 0 and training["final_loss"] > 0
