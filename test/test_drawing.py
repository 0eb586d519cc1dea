"""Skeleton drawing on the overlay and the person-class parameter."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.inference.drawing import CENTRE, LEFT, RIGHT, draw_skeletons, limb_colour
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, COCO_KEYPOINTS, COCO_SKELETON


def _person(score_of_right_arm: float) -> np.ndarray:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(20, 80, 17), np.linspace(10, 90, 17), 0.9
    kp[[6, 8, 10], 2] = score_of_right_arm                # right shoulder, elbow, wrist
    return kp


def test_edges_and_joints_below_the_threshold_are_not_drawn() -> None:
    blank = np.zeros((100, 100, 3), np.uint8)
    all_drawn = draw_skeletons(blank.copy(), [_person(0.9)], COCO_SKELETON, COCO_KEYPOINTS, 0.5)
    no_arm = draw_skeletons(blank.copy(), [_person(0.1)], COCO_SKELETON, COCO_KEYPOINTS, 0.5)
    assert all_drawn.any() and no_arm.any()
    assert no_arm.any(axis=2).sum() < all_drawn.any(axis=2).sum()
    # the wrist's joint dot is drawn only when it scores
    wrist = np.zeros((100, 100, 3), np.uint8)
    alone = _person(0.9)
    alone[:, 2] = 0.0
    alone[10, 2] = 0.9
    assert draw_skeletons(wrist, [alone], COCO_SKELETON, COCO_KEYPOINTS, 0.5)[int(alone[10, 1]), int(alone[10, 0])].all()
    # nothing drawn at all when every score is below the threshold
    assert not draw_skeletons(blank.copy(), [_person(0.9)], COCO_SKELETON, COCO_KEYPOINTS, 0.95).any()


def test_limb_colours_follow_the_side() -> None:
    assert limb_colour(13, 15, COCO_KEYPOINTS) == LEFT       # left knee - left ankle
    assert limb_colour(14, 16, COCO_KEYPOINTS) == RIGHT
    assert limb_colour(5, 6, COCO_KEYPOINTS) == CENTRE       # shoulder to shoulder


def test_person_classes_by_name_or_id() -> None:
    from segpp_ros.inference.pose import person_class_ids

    assert person_class_ids("person,rider", CITYSCAPES_CLASSES) == [11, 12]
    assert person_class_ids(" 11 ", CITYSCAPES_CLASSES) == [11]
    with pytest.raises(ValueError, match="names .pedestrian., which the segmentation model does not have.*person"):
        person_class_ids("pedestrian", CITYSCAPES_CLASSES)
