"""Top-down pose pipeline: person boxes from labels, crops, batched forward, flip test, mapping back.

Decoding of synthetic heatmaps and the crop affine round trip are covered in test_keypoints.py;
here the same properties are checked through PoseEstimator.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpp_ros.inference import pose as pose_mod
from segpp_ros.inference.crops import box_to_affine
from segpp_ros.inference.keypoints import gaussian_heatmaps
from segpp_ros.inference.pose import (
    PersonBox,
    PoseEstimator,
    PoseResult,
    flip_correction,
    person_boxes,
    whole_frame_box,
)
from segpp_ros.inference.preprocess import to_tensor
from segpp_ros.inference.vocab import COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON
from segpp_ros.model import CheckpointError, build_model, save_model
from segpp_ros.training.data.pose import render_pose_sample
from segpp_ros.training.data.scenes import render_scene
from segpp_ros.training.metrics import keypoint_boxes, pck
from segpp_ros.training.train import HELD_OUT_SEED_BASE

from .conftest import TINY, randomize_batchnorm

PERSON, RIDER = 11, 12


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(TINY, task="pose", num_keypoints=17, meta={
        "keypoints": list(COCO_KEYPOINTS), "skeleton": [list(e) for e in COCO_SKELETON],
        "flip_pairs": [list(p) for p in COCO_FLIP_PAIRS], "input_size": [64, 48]})).eval()
    path = tmp_path_factory.mktemp("pose") / "tiny_pose.safetensors"
    save_model(model, path)
    return str(path)


@pytest.fixture(scope="module")
def embedded() -> PoseEstimator:
    return PoseEstimator(device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: on a busy shared CPU two threads wait on each other (10x slower here) and
    these models are too small to gain from more; results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _box(x0: float, y0: float, x1: float, y1: float, instance_id: int = -1) -> PersonBox:
    return PersonBox(np.array([x0, y0, x1, y1], np.float32), 1.0, instance_id, int((x1 - x0) * (y1 - y0)))


# --------------------------------------------------------------------------- person boxes

def _blobs() -> np.ndarray:
    labels = np.zeros((200, 300), np.uint8)                 # 0: road
    labels[20:80, 10:40] = PERSON                           # A: 60 x 30 = 1800
    labels[100:140, 200:220] = PERSON                       # B: 40 x 20 = 800
    labels[120:160, 60:80] = PERSON                         # C: 40 x 20 = 800 ...
    labels[125:155, 84:100] = PERSON                        # D: 30 x 16 = 480, 4 empty columns right of C
    labels[20:60, 250:280] = RIDER                          # rider: 40 x 30 = 1200
    labels[180:190, 150:160] = PERSON                       # speck: 100 < min_area
    labels[160:180, 230:250] = PERSON                       # E: two 20 x 20 squares that touch only
    labels[180:200, 250:270] = PERSON                       #    diagonally: one component, 800
    return labels


def test_person_boxes_components_order_and_ids() -> None:
    found = person_boxes(_blobs(), merge_gap=-1)
    # largest first; equal areas (B, C, E: 800) top row first; rider and speck left out
    assert [p.box.tolist() for p in found] == [[10, 20, 39, 79],      # A
                                               [200, 100, 219, 139],  # B
                                               [60, 120, 79, 159],    # C
                                               [230, 160, 269, 199],  # E: 8-connected squares
                                               [84, 125, 99, 154]]    # D
    assert [p.area for p in found] == [1800, 800, 800, 800, 480]
    assert [p.instance_id for p in found] == list(range(5))
    assert all(p.box.dtype == np.float32 and p.box.shape == (4,) for p in found)
    assert found[0].score == 1.0
    assert found[3].score == pytest.approx(800 / 1600)    # half of E's box is empty


def test_person_boxes_merging_and_person_ids() -> None:
    labels = _blobs()
    separate = person_boxes(labels)                                 # default gap 0: C and D stay apart
    assert len(separate) == 5 and [60, 120, 79, 159] in [p.box.tolist() for p in separate]
    assert len(person_boxes(labels, merge_gap=3.9)) == 5
    merged = person_boxes(labels, merge_gap=4)                      # 4 empty columns between C and D
    cd = [p for p in merged if p.box.tolist() == [60, 120, 99, 159]]
    assert len(merged) == 4 and len(cd) == 1
    assert cd[0].area == 1280 and cd[0].score == pytest.approx(1280 / (40 * 40))
    assert merged[1] is cd[0] and cd[0].instance_id == 1          # second largest after merging
    # riders count only when asked for; the speck never
    with_riders = person_boxes(labels, person_ids=(PERSON, RIDER), merge_gap=-1)
    assert len(with_riders) == 6 and with_riders[1].box.tolist() == [250, 20, 279, 59]
    assert all(p.area >= 400 for p in with_riders)
    assert len(person_boxes(labels, min_area=1, merge_gap=-1)) == 6  # the speck (100 px) is back
    # a big merge gap chains everything into one box
    assert len(person_boxes(labels, merge_gap=1000)) == 1


def test_overlapping_boxes_merge_at_gap_zero_and_negative_gap_disables_merging() -> None:
    labels = np.zeros((100, 100), np.uint8)
    labels[10:60, 10:15] = PERSON                   # an L ...
    labels[55:60, 10:60] = PERSON
    labels[20:40, 30:50] = PERSON                   # ... and a block inside its box, not touching it
    assert len(person_boxes(labels, min_area=1)) == 1
    assert person_boxes(labels, min_area=1)[0].box.tolist() == [10, 10, 59, 59]
    assert len(person_boxes(labels, min_area=1, merge_gap=-1)) == 2


def test_person_boxes_scale_maps_label_px_to_image_px() -> None:
    small = _blobs()                                                # "network resolution"
    full = np.repeat(np.repeat(small, 2, 0), 2, 1)                  # the same labels at 2x
    scaled = person_boxes(small, min_area=1600, merge_gap=-1, scale=(2.0, 2.0))
    direct = person_boxes(full, min_area=1600, merge_gap=-1)
    assert [p.area for p in scaled] == [p.area for p in direct] == [7200, 3200, 3200, 3200, 1920]
    unscaled = person_boxes(small, min_area=400, merge_gap=-1)
    for s, d, u in zip(scaled, direct, unscaled):
        np.testing.assert_allclose(s.box, (u.box + 0.5) * 2 - 0.5)     # centres map to centres ...
        assert np.abs(s.box - d.box).max() == pytest.approx(0.5)       # ... half a px inside the 2x extent
    # min_area and merge_gap are in image px: C and D are 4 label px = 8 image px apart
    assert len(person_boxes(small, min_area=1000, merge_gap=7, scale=(2.0, 2.0))) == 5
    assert len(person_boxes(small, min_area=1000, merge_gap=8, scale=(2.0, 2.0))) == 4
    assert len(person_boxes(small, min_area=700, merge_gap=-1)) == 4                    # D: 480 label px
    assert len(person_boxes(small, min_area=700, merge_gap=-1, scale=(2.0, 2.0))) == 5  # D: 1920 image px
    anisotropic = person_boxes(small, merge_gap=-1, scale=(2.0, 0.5))[0]
    assert anisotropic.box.tolist() == [20.5, 9.75, 78.5, 39.25] and anisotropic.area == 1800


def test_person_boxes_edge_cases() -> None:
    assert person_boxes(np.zeros((10, 10), np.uint8)) == []
    assert person_boxes(np.full((30, 40), PERSON, np.uint16), min_area=1)[0].box.tolist() == [0, 0, 39, 29]
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        person_boxes(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="scale"):
        person_boxes(np.zeros((4, 4), np.uint8), scale=(0.0, 1.0))
    w = whole_frame_box(480, 640)
    assert w.box.tolist() == [0, 0, 639, 479] and w.score == 1.0 and w.instance_id == -1 and w.area == 480 * 640


def _greedy_boxes(labels: np.ndarray, person_ids, min_area: int, merge_gap: float, scale) -> list:
    """Reference: merge the first qualifying pair, start over, until no pair qualifies (what
    person_boxes did before it took vectorised rounds; O(n^3), fine for a few components)."""
    import cv2

    sx, sy = scale
    mask = np.isin(labels, list(person_ids)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    kept = [s for s in stats[1:count] if s[4] * sx * sy >= min_area]
    boxes = [[int(s[0]), int(s[1]), int(s[0] + s[2] - 1), int(s[1] + s[3] - 1)] for s in kept]
    areas = [int(s[4]) for s in kept]

    def gap(a, b) -> float:
        return max((max(b[0] - a[2], a[0] - b[2]) - 1) * sx, (max(b[1] - a[3], a[1] - b[3]) - 1) * sy, 0.0)
    merged = merge_gap >= 0
    while merged:
        merged = False
        for i in range(len(boxes)):
            j = next((j for j in range(i + 1, len(boxes)) if gap(boxes[i], boxes[j]) <= merge_gap), None)
            if j is not None:
                b = boxes.pop(j)
                boxes[i] = [min(boxes[i][0], b[0]), min(boxes[i][1], b[1]), max(boxes[i][2], b[2]),
                            max(boxes[i][3], b[3])]
                areas[i] += areas.pop(j)
                merged = True
                break
    return sorted(((round(a * sx * sy), b) for b, a in zip(boxes, areas)),
                  key=lambda item: (-item[0], (item[1][1] + 0.5) * sy, (item[1][0] + 0.5) * sx))


@pytest.mark.parametrize("seed", range(40))
def test_person_boxes_equal_greedy_merging(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(20, 90, 2))
    labels = np.where(rng.random((h, w)) < rng.uniform(0.02, 0.25), 11, rng.integers(0, 3, (h, w))).astype(np.uint8)
    labels[rng.random((h, w)) < 0.02] = 12
    gap = float(rng.choice([-1.0, 0.0, 0.0, 1.5, 3.0, 7.0]))
    scale = (float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.5, 3.0)))
    min_area = int(rng.choice([0, 2, 6]))
    got = person_boxes(labels, (11, 12), min_area, gap, scale)
    want = _greedy_boxes(labels, (11, 12), min_area, gap, scale)
    assert [p.area for p in got] == [a for a, _ in want]
    for p, (_, box) in zip(got, want):
        np.testing.assert_allclose(p.box, [(box[0] + 0.5) * scale[0] - 0.5, (box[1] + 0.5) * scale[1] - 0.5,
                                           (box[2] + 0.5) * scale[0] - 0.5, (box[3] + 0.5) * scale[1] - 0.5],
                                   rtol=1e-6)
    assert [p.instance_id for p in got] == list(range(len(got)))


def test_thousands_of_components_take_a_few_rounds_not_cubic_time() -> None:
    """2025 one-pixel components 8 px apart (the old loop took 18 s for 2000): unmerged at gap 0,
    all one box at gap 8, a chain merging step by step at gap 8 in one direction only."""
    labels = np.zeros((400, 400), np.uint8)
    labels[::9, ::9] = 11
    assert len(person_boxes(labels, (11,), min_area=0, merge_gap=0.0)) == 45 * 45
    (one,) = person_boxes(labels, (11,), min_area=0, merge_gap=8.0)
    np.testing.assert_array_equal(one.box, [0, 0, 396, 396])
    assert one.area == 45 * 45
    rows = person_boxes(labels, (11,), min_area=0, merge_gap=8.0, scale=(1.0, 2.0))   # rows 16 px apart
    assert len(rows) == 45 and all(p.area == 45 * 2 for p in rows)              # areas in image px


def test_boxes_from_ground_truth_labels_match_the_scene_boxes() -> None:
    scene = render_scene(HELD_OUT_SEED_BASE, 512, 1024)     # two fully visible persons
    found = person_boxes(scene.labels)
    assert len(found) == 2
    for p, truth in zip(found, sorted(scene.persons, key=lambda q: -(scene.instances == q.instance_id).sum())):
        # scene boxes are pixel edges (extreme centres +- 0.5), ours are centres
        np.testing.assert_allclose(p.box, truth.box + np.array([0.5, 0.5, -0.5, -0.5]), atol=1.0)


# --------------------------------------------------------------------------- estimator basics

def test_estimator_metadata_and_defaults(tiny_weights: str) -> None:
    est = PoseEstimator(tiny_weights, device="cpu")
    assert est.input_size == (64, 48)                       # from the checkpoint's metadata
    assert est.keypoint_names == list(COCO_KEYPOINTS)
    assert est.skeleton == list(COCO_SKELETON) and est.flip_pairs == list(COCO_FLIP_PAIRS)
    assert PoseEstimator(tiny_weights, device="cpu", input_size=(96, 72)).input_size == (96, 72)
    assert "pose" in est.describe()


def test_estimator_rejects_what_it_cannot_run(tmp_path, tiny_weights: str) -> None:
    seg = tmp_path / "seg.safetensors"
    save_model(build_model(TINY, num_classes=19).eval(), seg)
    with pytest.raises(CheckpointError, match="'pose' was requested"):
        PoseEstimator(seg, device="cpu")
    five = tmp_path / "five.safetensors"                    # 5 keypoints, no metadata: no flip pairs
    save_model(build_model(TINY, task="pose", num_keypoints=5).eval(), five)
    est = PoseEstimator(five, device="cpu")
    assert est.keypoint_names == [f"keypoint_{i}" for i in range(5)] and est.flip_pairs == [] == est.skeleton
    assert est.input_size == (256, 192)
    with pytest.raises(ValueError, match="flip_test=False.*flip_pairs"):
        PoseEstimator(five, device="cpu", flip_test=True)
    for kwargs, message in [({"refine": "argmax"}, "refine"), ({"precision": "int8"}, "precision"),
                            ({"input_size": (16, 16)}, "too small"), ({"padding": 0}, "padding")]:
        with pytest.raises(ValueError, match=message):
            PoseEstimator(tiny_weights, device="cpu", **kwargs)
    with pytest.raises(ValueError, match="RGB uint8"):
        PoseEstimator(tiny_weights, device="cpu")(np.zeros((32, 32), np.uint8), [whole_frame_box(32, 32)])


def test_no_boxes_no_forward(tiny_weights: str, monkeypatch) -> None:
    est = PoseEstimator(tiny_weights, device="cpu")
    monkeypatch.setattr(est, "heatmaps", lambda crops: pytest.fail("forward without boxes"))
    for boxes, limit in [([], 8), ([whole_frame_box(40, 60)], 0)]:
        result = est(np.zeros((40, 60, 3), np.uint8), boxes, max_persons=limit)
        assert isinstance(result, PoseResult) and result.persons == [] and result.network_ms == 0.0
        assert result.total_ms >= 0.0


# --------------------------------------------------------------------------- mapping back to the image

def _synthetic_model(est: PoseEstimator, crop_points: np.ndarray, calls: list[int]):
    """heatmaps() stand-in: crop i gets Gaussian peaks at crop_points[i] [K, 2] (crop px)."""
    def heatmaps(crops: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        kp = np.concatenate([crop_points[:len(crops)], np.full((len(crops), crop_points.shape[1], 1), 2.0)], -1)
        return torch.from_numpy(np.stack([gaussian_heatmaps(k, est.input_size)[0] for k in kp]))
    return heatmaps


def test_heatmap_peaks_map_back_to_image_points(tiny_weights: str, monkeypatch) -> None:
    est = PoseEstimator(tiny_weights, device="cpu", input_size=(256, 192))
    rng = np.random.default_rng(0)
    boxes = [_box(100.0, 40.0, 180.0, 400.0, 3), _box(400.5, 200.25, 430.0, 260.0, 0),   # tall, small
             _box(-20.0, 300.0, 300.0, 470.0, 7)]                                        # wide, off the edge
    crop_points = np.stack([np.column_stack([rng.uniform(24, 168, 17), rng.uniform(24, 232, 17)])
                            for _ in boxes])
    calls: list[int] = []
    monkeypatch.setattr(est, "heatmaps", _synthetic_model(est, crop_points, calls))
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    result = est(image, boxes)
    assert calls == [3]                                     # one batched forward
    assert [p.instance_id for p in result.persons] == [3, 0, 7]
    for person, box, pts in zip(result.persons, boxes, crop_points):
        a = box_to_affine(box.box, (256, 192), 1.25)
        expected = (pts - a[:, 2]) / np.diag(a[:, :2])      # crop -> image, by hand
        assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
        assert np.abs(person.keypoints[:, :2] - expected).max() <= 0.5
        assert np.all(person.keypoints[:, 2] > 0.9)
        np.testing.assert_array_equal(person.box, box.box)
    assert len(est(image, boxes, max_persons=2).persons) == 2 and calls[-1] == 2


# --------------------------------------------------------------------------- batching and merging

@pytest.mark.parametrize("merge", ["none", "fast"])
def test_batch_equals_singles(tiny_weights: str, merge: str) -> None:
    est = PoseEstimator(tiny_weights, device="cpu", merge=merge)
    crops = torch.randn(4, 3, 64, 48)
    batched = est.heatmaps(crops)
    singles = torch.cat([est.heatmaps(crops[i:i + 1]) for i in range(4)])
    assert batched.shape == (4, 17, 16, 12) and batched.dtype == torch.float32
    assert (batched - singles).abs().max().item() <= 1e-4
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [_box(10, 10, 60, 110), _box(70, 20, 150, 100), _box(5, 50, 40, 119)]
    together = est(image, boxes).persons
    alone = [est(image, [b]).persons[0] for b in boxes]
    for t, a in zip(together, alone):
        np.testing.assert_allclose(t.keypoints, a.keypoints, atol=1e-3)


def test_frames_of_several_cameras_share_one_forward(tiny_weights: str, monkeypatch) -> None:
    """PoseEstimator.batch: the persons of several frames (sizes of their own, one without
    persons) through one forward; each frame gets what it gets alone, in its own image px."""
    est = PoseEstimator(tiny_weights, device="cpu")
    rng = np.random.default_rng(2)
    frames = [(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), [_box(10, 10, 60, 110), _box(70, 20, 150, 100)]),
              (rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), []),
              (rng.integers(0, 256, (64, 200, 3), dtype=np.uint8), [_box(5, 5, 120, 60), _box(0, 0, 30, 30),
                                                                     _box(150, 10, 199, 63)])]
    alone = [est(image, boxes, max_persons=2) for image, boxes in frames]
    forward = est.heatmaps
    calls: list[int] = []
    monkeypatch.setattr(est, "heatmaps", lambda crops: calls.append(len(crops)) or forward(crops))
    together = est.batch(frames, max_persons=2)
    assert calls == [4]                                   # 2 + 0 + the first 2 of 3, one forward
    assert [len(r.persons) for r in together] == [2, 0, 2] and together[1].network_ms == 0.0
    for t, a in zip(together, alone):
        for pt, pa in zip(t.persons, a.persons):
            np.testing.assert_array_equal(pt.box, pa.box)
            np.testing.assert_allclose(pt.keypoints, pa.keypoints, atol=1e-3)


def test_merge_changes_heatmaps_and_none_restores_them(tiny_weights: str) -> None:
    est = PoseEstimator(tiny_weights, device="cpu", input_size=(128, 96))
    crops = torch.randn(2, 3, 128, 96)
    reference = est.heatmaps(crops)
    assert est.set_merge("2x2").name == "2x2"
    assert not torch.allclose(est.heatmaps(crops), reference, atol=1e-4)
    est.set_merge("none")
    assert torch.equal(est.heatmaps(crops), reference)


# --------------------------------------------------------------------------- flip test

def _blob_image(centre: tuple[float, float], hw: tuple[int, int] = (300, 400), sigma: float = 3.0) -> np.ndarray:
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]]
    g = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    image = np.zeros((*hw, 3), np.uint8)
    image[..., 0] = np.round(255 * g)
    return image


def _equivariant_model(k: int):
    """heatmaps() stand-in that is a true function of the crop in the heatmap convention (input x at
    heatmap x / 4): Gaussian blur of the red channel sampled every 4th pixel, the same map for all
    k channels, so the flip swap is a no-op and only the mirrored map's alignment is tested."""
    t = torch.arange(-18, 19, dtype=torch.float32)
    kern = torch.exp(-t ** 2 / (2 * 6.0 ** 2))
    kern = kern / kern.sum()

    def heatmaps(crops: torch.Tensor) -> torch.Tensor:
        r = crops[:, :1].float()
        r = r - r.amin(dim=(-2, -1), keepdim=True)
        r = F.conv2d(r, kern.view(1, 1, 1, -1), padding=(0, 18))
        r = F.conv2d(r, kern.view(1, 1, -1, 1), padding=(18, 0))
        return r[..., ::4, ::4].expand(-1, k, -1, -1).contiguous()
    return heatmaps


@pytest.mark.parametrize("input_size,shift", [((256, 192), 3.0), ((256, 190), 1.0)])
def test_flip_alignment_is_exact(tiny_weights: str, monkeypatch, input_size, shift: float) -> None:
    assert flip_correction(input_size[1]) == shift          # (W - 1) - 4 (ceil(W / 4) - 1)
    centre = (201.3, 148.7)
    image = _blob_image(centre)
    box = [_box(centre[0] - 60.2, centre[1] - 81.0, centre[0] + 57.0, centre[1] + 79.4)]
    scale = box_to_affine(box[0].box, input_size, 1.25)[0, 0]     # crop px per image px (~1.28)
    results = {}
    for flip in (False, True):
        est = PoseEstimator(tiny_weights, device="cpu", input_size=input_size, flip_test=flip)
        monkeypatch.setattr(est, "heatmaps", _equivariant_model(17))
        results[flip] = est(image, box).persons[0].keypoints
    assert np.abs(results[False][:, :2] - centre).max() < 0.15
    assert np.abs(results[True][:, :2] - results[False][:, :2]).max() < 0.05
    # without the correction the flip-tested x would be off by half the shift (crop px)
    monkeypatch.setattr(pose_mod, "flip_correction", lambda width, stride=4: 0.0)
    off = est(image, box).persons[0].keypoints
    assert np.abs((off[:, 0] - results[False][:, 0]) * scale + shift / 2).max() < 0.05


def test_flip_swaps_left_and_right(tiny_weights: str, monkeypatch) -> None:
    """A 'semantic' stand-in: in the mirrored crop the person's left wrist looks like a right one."""
    est = PoseEstimator(tiny_weights, device="cpu", input_size=(256, 192), flip_test=True)
    rng = np.random.default_rng(5)
    points = np.column_stack([rng.uniform(30, 160, 17), rng.uniform(30, 220, 17)])     # crop px, one person
    perm = list(range(17))
    for a, b in COCO_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    mirrored = points[perm].copy()
    mirrored[:, 0] = 191 - mirrored[:, 0]
    calls = []

    def heatmaps(crops: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        assert torch.equal(crops[1], crops[0].flip(-1))     # the mirrored crop rides in the same batch
        maps = [gaussian_heatmaps(np.column_stack([p, np.full(17, 2.0)]), (256, 192))[0] for p in (points, mirrored)]
        return torch.from_numpy(np.stack(maps))

    monkeypatch.setattr(est, "heatmaps", heatmaps)
    kp, _ = est.crop_keypoints(torch.zeros(1, 3, 256, 192))
    assert calls == [2]
    assert np.abs(kp[0, :, :2] - points).max() < 0.05


def test_flip_test_is_at_least_as_accurate(embedded: PoseEstimator) -> None:
    samples = [render_pose_sample(HELD_OUT_SEED_BASE + i, embedded.input_size) for i in range(24)]
    truth = np.stack([s.keypoints for s in samples])
    crops = to_tensor(np.stack([s.image for s in samples]))
    plain, _ = embedded.crop_keypoints(crops)
    embedded.flip_test = True
    try:
        flipped, _ = embedded.crop_keypoints(crops)
    finally:
        embedded.flip_test = False
    boxes = keypoint_boxes(truth)
    assert pck(flipped, truth, boxes, 0.1) >= pck(plain, truth, boxes, 0.1) - 1.0


# --------------------------------------------------------------------------- the embedded model end to end

def test_embedded_model_on_whole_scenes(embedded: PoseEstimator) -> None:
    """Whole frames, ground-truth person boxes: keypoints in image px against the scene's truth."""
    preds, truths = [], []
    for i in range(12):
        scene = render_scene(HELD_OUT_SEED_BASE + i, 512, 1024)
        persons = [p for p in scene.persons if (p.keypoints[:, 2] == 2).sum() >= 6 and p.box[3] - p.box[1] >= 64]
        if not persons:
            continue
        boxes = [PersonBox(p.box, 1.0, p.instance_id, 0) for p in persons]
        result = embedded(scene.image, boxes)
        assert [q.instance_id for q in result.persons] == [p.instance_id for p in persons]
        preds += [q.keypoints for q in result.persons]
        truths += [p.keypoints for p in persons]
    truth = np.stack(truths)
    assert len(truth) >= 12
    assert pck(np.stack(preds), truth, keypoint_boxes(truth), 0.1) >= 50.0
