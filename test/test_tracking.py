"""Person tracking (segpp_ros.inference.tracking) and the scripted walk it is scored on."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.inference.tracking import PersonTracker, inside, iou, keypoint_similarity
from segpp_ros.training.data.walk import id_switches, match_identities, scripted_walk


def box(x: float, y: float = 50.0, w: float = 40.0, h: float = 100.0) -> np.ndarray:
    return np.array([x, y, x + w - 1, y + h - 1], np.float32)


def test_box_measures() -> None:
    assert iou(box(0), box(0)) == 1.0 and iou(box(0), box(100)) == 0.0
    assert iou(box(0), box(20)) == pytest.approx(20 * 100 / (60 * 100))
    assert inside(box(10, w=10), box(0)) == 1.0 and inside(box(35, w=10), box(0)) == 0.5
    kp = np.array([[10.0 + k, 20.0 + 2 * k, 0.9] for k in range(17)], np.float32)
    assert keypoint_similarity(kp, kp, box(0), 0.3) == pytest.approx(1.0)
    assert keypoint_similarity(kp, kp + [30, 0, 0], box(0), 0.3) < 0.2
    assert keypoint_similarity(kp * [1, 1, 0], kp, box(0), 0.3) == 0.0          # no joint scores


def test_persons_crossing_keep_their_ids_by_their_motion() -> None:
    """A walks right, B walks left; for three frames their boxes coincide. The last boxes alone
    would swap them (both overlap both); the predicted boxes do not."""
    tracker = PersonTracker()
    for i in range(12):
        a, b = box(10 + 10 * i), box(120 - 10 * i)
        ids = tracker.update([a, b])
        assert ids == [1, 2], (i, ids)


def test_a_track_survives_max_missed_frames_then_a_new_id_and_ids_are_never_reused() -> None:
    tracker = PersonTracker(max_missed=3)
    assert tracker.update([box(0)]) == [1]
    for _ in range(3):
        assert tracker.update([]) == []
    assert tracker.update([box(2)]) == [1]             # back within max_missed frames: the same person
    for _ in range(4):
        tracker.update([])
    assert tracker.update([box(2)]) == [2]             # gone too long: a new person
    assert tracker.update([box(2), box(200)]) == [2, 3]


def test_a_person_cut_by_the_image_edge_keeps_the_id() -> None:
    tracker = PersonTracker()
    for i in range(5):
        tracker.update([box(100 + 10 * i)])
    # only a narrow strip is in view now: small IoU with the track's box, but inside its prediction
    assert tracker.update([np.array([155, 50, 159, 149], np.float32)]) == [1]


def test_the_scripted_walk_with_true_boxes_has_no_id_switch() -> None:
    walk = scripted_walk()
    assert len(walk) == 48 and all(set(f.boxes) <= {"A", "B"} for f in walk)
    gone = [i for i, f in enumerate(walk) if "A" not in f.boxes]
    assert gone and 28 < gone[0] and gone[-1] < len(walk) - 1            # A leaves after crossing, comes back
    tracker = PersonTracker()
    assigned = []
    for frame in walk:
        names = list(frame.boxes)
        ids = tracker.update([frame.boxes[n] for n in names])
        assigned.append(dict(zip(names, ids)))
    assert id_switches(assigned) == 0
    assert assigned[gone[0] - 1]["A"] == assigned[gone[-1] + 1]["A"]


def test_id_switches_and_identity_matching() -> None:
    assert id_switches([{"A": 1, "B": 2}, {"A": 2, "B": 1}, {"A": 2}]) == 2
    assert id_switches([{"A": 1}, {}, {"A": 1}]) == 0
    truth = {"A": box(0), "B": box(100)}
    assert match_identities(truth, [box(101), box(1)]) == {"A": 1, "B": 0}
    assert match_identities(truth, [box(300)]) == {}


def test_the_walk_study_through_the_pipeline(capsys) -> None:
    """segpp-walk: with the true boxes as a detector's every identity is covered and keeps its id;
    with the segmentation's boxes fewer are covered (the crossing persons are one component)."""
    from segpp_ros.cli import walk

    assert walk.main(["--size", "120x160", "--max-side", "128", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    frames, truth, covered, switches = (int(v) for v in rows["detections"][:4])
    assert (frames, covered, switches) == (48, truth, 0) and truth > 48
    assert int(rows["segmentation"][2]) < truth
