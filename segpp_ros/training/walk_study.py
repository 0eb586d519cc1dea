"""Tracking on the scripted walk (segpp-walk): id switches and what tracking costs, per box source.

The walk (segpp_ros.training.data.walk) goes through the frame pipeline twice: with the
segmentation's person boxes, and with the true boxes as a detector would hand them in
(box_source 'detections'). Each frame's persons are matched to the walk's identities (IoU >= 0.3)
and the track ids they got scored as MOT's ID switches. The tracker's own time per frame is
measured by running its updates again on the same persons, apart from the models.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from ..inference import PoseEstimator, Segmenter
from ..inference.pipeline import PERSON_BOXES, Frame, FramePipeline, FrameSettings, PoseSettings
from ..inference.pose import PersonBox
from ..inference.timing import markdown_table
from ..inference.tracking import PersonTracker
from .data.classes import TRAIN_ID
from .data.walk import id_switches, match_identities, scripted_walk

SOURCES = ("segmentation", "detections")


@dataclass
class WalkRow:
    box_source: str
    frames: int
    truth: int          # identity-frames in the walk
    matched: int        # of those, covered by a person box (IoU >= 0.3)
    id_switches: int
    track_us_p50: float
    keypoints_ms_p50: float


def run(max_side: int = 256, height: int = 240, width: int = 320, device: str = "cpu") -> list[WalkRow]:
    walk = scripted_walk(height, width)
    segmenter, pose = Segmenter(None, device=device, max_side=max_side), PoseEstimator(None, device=device)
    rows = []
    for source in SOURCES:
        pipeline = FramePipeline(segmenter, pose, [TRAIN_ID["person"], TRAIN_ID["rider"]])
        settings = FrameSettings(max_side=max_side, pose=PoseSettings(box_source=source, min_box_area=100))
        assigned, persons, pose_ms = [], [], []
        for frame in walk:
            extras = {}
            if source == "detections":
                extras[PERSON_BOXES] = [PersonBox(b, 1.0, i, int((b[2] - b[0] + 1) * (b[3] - b[1] + 1)))
                                        for i, b in enumerate(frame.boxes.values())]
            result = pipeline([Frame(frame.image, extras=extras)], settings)[0]
            found = result.pose.persons
            matched = match_identities(frame.boxes, [p.box for p in found])
            assigned.append({name: found[i].track_id for name, i in matched.items()})
            persons.append(([p.box for p in found], [p.keypoints for p in found]))
            pose_ms.append(result.pose_ms)
        tracker, track_us = PersonTracker(), []
        for boxes, keypoints in persons:
            start = time.perf_counter()
            tracker.update(boxes, keypoints)
            track_us.append((time.perf_counter() - start) * 1e6)
        rows.append(WalkRow(source, len(walk), sum(len(f.boxes) for f in walk), sum(len(a) for a in assigned),
                            id_switches(assigned), round(statistics.median(track_us), 1),
                            round(statistics.median(pose_ms), 1)))
    return rows


def format_table(rows: list[WalkRow]) -> str:
    return markdown_table(["box source", "frames", "persons (truth)", "covered by a box", "id switches",
                           "tracking µs/frame (p50)", "keypoint step ms (p50)"],
                          [[r.box_source, str(r.frames), str(r.truth), str(r.matched), str(r.id_switches),
                            f"{r.track_us_p50:.0f}", f"{r.keypoints_ms_p50:.0f}"] for r in rows])
