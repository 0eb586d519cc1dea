"""vision_msgs in and out: ~/label_info (LabelInfo), ~/persons (Detection2DArray), a detector's boxes.

Boxes follow camera_info's pixel convention (pixel centres at integer coordinates, as our
keypoints): a person box [x0, y0, x1, y1] of extreme pixel centres is the BoundingBox2D with
centre ((x0 + x1) / 2, (y0 + y1) / 2) and size (x1 - x0 + 1, y1 - y0 + 1), the whole pixels it
covers; a detector's box is read back the same way.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    VisionClass,
)

from ..inference.pose import PersonBox, PoseResult

PERSON_CLASS = "person"


def label_info_message(classes: Sequence[str], stamp: Any) -> LabelInfo:
    """~/label_info: class id -> name of every class of ~/label (latched, vision_msgs' convention)."""
    msg = LabelInfo(class_map=[VisionClass(class_id=i, class_name=str(name)) for i, name in enumerate(classes)],
                    threshold=0.0)
    msg.header.stamp = stamp
    return msg


def box_message(box: np.ndarray) -> BoundingBox2D:
    bbox = BoundingBox2D(size_x=float(box[2] - box[0] + 1), size_y=float(box[3] - box[1] + 1))
    bbox.center.position.x = float(box[0] + box[2]) / 2
    bbox.center.position.y = float(box[1] + box[3]) / 2
    return bbox


def persons_message(header: Any, result: PoseResult) -> Detection2DArray:
    """~/persons: each person's box, the hypothesis 'person' with its box score, and its track id
    as the detection id; the image's header."""
    detections = []
    for p in result.persons:
        hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=PERSON_CLASS, score=float(p.score)))
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=box_message(p.box),
                                      id=str(p.track_id)))
    return Detection2DArray(header=header, detections=detections)


def parse_classes(text: str) -> set[str]:
    """'person,0' -> {'person', '0'}: the class ids a detector's hypotheses must carry."""
    return {c.strip() for c in text.split(",") if c.strip()}


def detected_persons(msg: Detection2DArray, classes: set[str], height: int, width: int) -> list[PersonBox]:
    """A detector's person boxes in a frame of height x width, clipped to it: detections whose
    best hypothesis (or any hypothesis) has a class id in ``classes``; score: that hypothesis's;
    instance_id: the detection's index in the message."""
    boxes = []
    for i, det in enumerate(msg.detections):
        scores = [h.hypothesis.score for h in det.results if str(h.hypothesis.class_id).strip() in classes]
        if not scores:
            continue
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        hx, hy = (det.bbox.size_x - 1) / 2, (det.bbox.size_y - 1) / 2
        x0, y0 = max(cx - hx, 0.0), max(cy - hy, 0.0)
        x1, y1 = min(cx + hx, width - 1.0), min(cy + hy, height - 1.0)
        if x1 < x0 or y1 < y0:
            continue                                   # outside the frame
        box = np.array([x0, y0, x1, y1], np.float32)
        boxes.append(PersonBox(box, float(max(scores)), i, round((x1 - x0 + 1) * (y1 - y0 + 1))))
    return boxes
