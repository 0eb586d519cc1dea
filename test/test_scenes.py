"""Synthetic street scenes: determinism, scale consistency, label/keypoint consistency, content."""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, COCO_KEYPOINTS
from segpp_ros.training.data.classes import TRAIN_ID
from segpp_ros.training.data.scenes import Scene, render_scene

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(6)
SMALL = (128, 256)          # most checks need no detail: small renders keep the suite fast


def digest(scene: Scene) -> str:
    h = hashlib.sha256()
    for a in (scene.image, scene.labels, scene.instances):
        h.update(np.ascontiguousarray(a).tobytes())
    for p in scene.persons:
        h.update(p.keypoints.tobytes() + p.box.tobytes() + str(p.instance_id).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [render_scene(s, 256, 512) for s in SEEDS]


def test_outputs_have_the_documented_types() -> None:
    s = render_scene(3, *SMALL)
    assert s.image.shape == (*SMALL, 3) and s.image.dtype == np.uint8
    assert s.labels.shape == SMALL and s.labels.dtype == np.uint8
    assert s.instances.shape == SMALL and s.instances.dtype == np.int32
    assert s.labels.max() < len(CITYSCAPES_CLASSES)                        # no ignore pixels
    for p in s.persons:
        assert p.keypoints.shape == (17, 3) and p.keypoints.dtype == np.float32
        assert p.box.shape == (4,) and p.box.dtype == np.float32
        assert set(np.unique(p.keypoints[:, 2])) <= {0.0, 1.0, 2.0}


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b, c = render_scene(11, *SMALL), render_scene(11, *SMALL), render_scene(12, *SMALL)
    assert digest(a) == digest(b)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.labels, c.labels)


def test_bytes_do_not_depend_on_the_process_or_hash_seed() -> None:
    code = ("import hashlib, sys; sys.path.insert(0, %r); from test.test_scenes import digest; "
            "from segpp_ros.training.data.scenes import render_scene; print(digest(render_scene(5, 96, 160)))" % str(REPO))
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(render_scene(5, 96, 160))


def test_half_size_render_is_a_downscaled_full_size_render() -> None:
    small, big = render_scene(2, 512, 1024), render_scene(2, 1024, 2048)
    # nearest downscale: small pixel (i, j) is centred between big pixels 2i and 2i + 1
    agree = (small.labels == big.labels[::2, ::2]).mean()
    assert agree >= 0.97, agree
    down = big.image.reshape(512, 2, 1024, 2, 3).mean(axis=(1, 3))
    assert np.abs(down - small.image).mean() < 6.0
    assert len(small.persons) == len(big.persons)
    for p, q in zip(small.persons, big.persons):
        # same figure: keypoints scale by 2 about the pixel-centre convention (x + 0.5) * 2 - 0.5
        assert np.allclose((p.keypoints[:, :2] + 0.5) * 2 - 0.5, q.keypoints[:, :2], atol=1e-3)


def test_other_sizes_and_aspects_render() -> None:
    for h, w in ((16, 16), (100, 333), (240, 320)):
        s = render_scene(4, h, w)
        assert s.image.shape == (h, w, 3) and s.labels.shape == (h, w)


def test_keypoint_visibility_boxes_and_instances_agree(scenes: list[Scene]) -> None:
    person = TRAIN_ID["person"]
    for s in scenes:
        h, w = s.labels.shape
        assert np.all(s.labels[s.instances > 0] == person)
        ids = {p.instance_id for p in s.persons}
        assert set(np.unique(s.instances)) - {0} == ids                    # every listed person is seen
        for p in s.persons:
            kp = p.keypoints
            ix, iy = np.floor(kp[:, :2] + 0.5).astype(int).T
            inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            v = kp[:, 2]
            assert np.array_equal(v == 0, ~inside)
            own = np.zeros(17, bool)
            own[inside] = s.instances[iy[inside], ix[inside]] == p.instance_id
            assert np.array_equal(v == 2, own)                              # v == 2 iff on the figure
            assert np.all(s.labels[iy[v == 2], ix[v == 2]] == person)
            x0, y0, x1, y1 = p.box
            assert -0.5 <= x0 < x1 <= w - 0.5 and -0.5 <= y0 < y1 <= h - 0.5
            shown = kp[v > 0]
            assert np.all((shown[:, 0] >= x0) & (shown[:, 0] <= x1) & (shown[:, 1] >= y0) & (shown[:, 1] <= y1))
            ys, xs = np.nonzero(s.instances == p.instance_id)
            assert xs.min() >= x0 + 0.5 and xs.max() <= x1 - 0.5 and ys.min() >= y0 + 0.5 and ys.max() <= y1 - 0.5


def test_all_street_classes_appear(scenes: list[Scene]) -> None:
    seen = set()
    for s in scenes:
        seen |= {CITYSCAPES_CLASSES[c] for c in np.unique(s.labels)}
    assert {"road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole"} <= seen


def test_classes_are_textured_and_distinct(scenes: list[Scene]) -> None:
    """Each class region has texture (not a flat colour), and classes differ in mean colour."""
    for s in scenes:
        grey = s.image.astype(np.float64).mean(axis=2)
        for c in np.unique(s.labels):
            mask = s.labels == c
            if mask.sum() >= 400:
                assert grey[mask].std() > 3.0, (CITYSCAPES_CLASSES[c], grey[mask].std())
    # road and sidewalk (neighbours, both grey-ish) differ in mean colour in every scene holding
    # enough of both, and at least one scene does
    compared = 0
    for s in scenes:
        road, walk = (s.labels == TRAIN_ID["road"]), (s.labels == TRAIN_ID["sidewalk"])
        if road.sum() >= 400 and walk.sum() >= 400:
            compared += 1
            assert np.abs(s.image[road].mean(axis=0) - s.image[walk].mean(axis=0)).sum() > 20
    assert compared >= 1, "no scene shows both road and sidewalk"


def test_every_scene_has_persons_some_occluded_some_large(scenes: list[Scene]) -> None:
    assert all(1 <= len(s.persons) <= 8 for s in scenes)
    visibility = np.concatenate([p.keypoints[:, 2] for s in scenes for p in s.persons])
    assert (visibility == 1).any() and (visibility == 2).sum() > 50
    tallest = max(p.box[3] - p.box[1] for s in scenes for p in s.persons)
    assert tallest >= 0.15 * 256                                           # >= 150 px at 1024 rows


def test_left_and_right_follow_the_facing() -> None:
    """COCO left/right are the person's own: facing the camera, their left is on the image right."""
    from segpp_ros.training.data.scenes import _body_points, _Camera, _figure_to_world
    body = _body_points(np.random.Generator(np.random.PCG64(0)), 1.0)
    cam = _Camera(horizon=0.45, cx=1.0, focal=2.0, height=1.4)
    left, right = COCO_KEYPOINTS.index("left_shoulder"), COCO_KEYPOINTS.index("right_shoulder")
    front = cam.project(_figure_to_world(body, 0.0, 10.0, math.pi))
    back = cam.project(_figure_to_world(body, 0.0, 10.0, 0.0))
    assert front[left, 0] > front[right, 0] and back[left, 0] < back[right, 0]
    facing_right = _figure_to_world(body, 0.0, 10.0, math.pi / 2)
    assert facing_right[left, 2] > facing_right[right, 2]                  # left side turned away
    assert facing_right[COCO_KEYPOINTS.index("nose"), 0] > 0.05            # nose points image-right
