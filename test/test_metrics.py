"""mIoU and PCK on hand-checked examples."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.training.metrics import confusion_matrix, iou_per_class, keypoint_boxes, mean_iou, pck


def test_confusion_and_miou_by_hand() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    conf = confusion_matrix(pred, target, num_classes=4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(conf)
    assert iou[:3] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert np.isnan(iou[3])                       # never seen: not part of the mean
    assert mean_iou(conf) == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_predicting_an_absent_class_costs_nothing_but_its_pixels() -> None:
    target = np.zeros((2, 2), int)
    conf = confusion_matrix(np.array([[0, 0], [0, 3]]), target, num_classes=4)
    assert mean_iou(conf) == pytest.approx(75.0)


def test_bad_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2), int), 3)


def test_pck_threshold_scales_with_box_and_skips_unlabelled() -> None:
    target = np.array([[[10, 10, 2], [20, 20, 1], [30, 30, 0]]], float)
    pred = np.array([[[10, 14, 0.9], [20, 26, 0.8], [0, 0, 0.1]]], float)
    boxes = np.array([[0, 0, 50, 40]], float)           # max side 50
    assert pck(pred, target, boxes, 0.1) == pytest.approx(50.0)    # 4 <= 5 < 6
    assert pck(pred, target, boxes, 0.2) == pytest.approx(100.0)
    assert pck(pred, target, boxes, 0.05) == pytest.approx(0.0)


def test_keypoint_boxes_span_labelled_joints_only() -> None:
    kps = np.array([[[5, 9, 2], [1, 3, 1], [100, 100, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], float)
    assert keypoint_boxes(kps).tolist() == [[1, 3, 5, 9], [0, 0, 0, 0]]
