"""3-D from an aligned depth image (segpp_ros.inference.depth) on a synthetic RGB-D scene whose
geometry is known:

    colour 120x160, fx = fy = 100 px, principal point (79.5, 59.5) (the optical axis through
    the image centre); a wall (class 2, building) at 4.0 m everywhere, a person-shaped box
    (class 11, columns 60..99, rows 20..109) at 2.0 m in front of it.

A pixel (u, v) at depth z is at x = (u - 79.5) z / 100, y = (v - 59.5) z / 100."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.inference.depth import (
    DepthError,
    depth_frame,
    depth_metres,
    keypoints_3d,
    labelled_points,
)
from segpp_ros.inference.pose import PersonPose, PoseResult

H, W = 120, 160
K = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
WALL, PERSON = 2, 11
BOX = np.array([60, 20, 99, 109], np.float32)        # the person's extreme pixel centres
WALL_M, PERSON_M = 4.0, 2.0


def scene_labels() -> np.ndarray:
    labels = np.full((H, W), WALL, np.uint8)
    labels[20:110, 60:100] = PERSON
    return labels


def scene_depth_m(scale: int = 1) -> np.ndarray:
    """Metres at the colour size / scale (the same view at a lower resolution)."""
    depth = np.full((H // scale, W // scale), WALL_M, np.float32)
    depth[20 // scale:110 // scale, 60 // scale:100 // scale] = PERSON_M
    return depth


def person(joints: list[tuple[float, float]], track_id: int = 7) -> PoseResult:
    kp = np.array([[u, v, 0.8] for u, v in joints], np.float32)
    return PoseResult([PersonPose(BOX, 0.9, 0, kp, track_id)], 1.0, 1.0)


def test_both_encodings_read_as_metres_and_no_reading_is_nan() -> None:
    mm = np.array([[2000, 0], [4000, 1234]], np.uint16)
    np.testing.assert_array_equal(depth_metres(mm, "16UC1"), np.array([[2.0, np.nan], [4.0, 1.234]], np.float32))
    m = np.array([[2.0, 0.0], [np.nan, -1.0]], np.float32)
    out = depth_metres(m, "32FC1")
    assert out[0, 0] == 2.0 and np.isnan(out[0, 1]) and np.isnan(out[1, 0]) and np.isnan(out[1, 1])
    with pytest.raises(DepthError, match="'rgb8' is not a depth image: use 16UC1.*or 32FC1"):
        depth_metres(np.zeros((2, 2, 3), np.uint8), "rgb8")


@pytest.mark.parametrize("scale", [1, 2])
def test_keypoints_take_the_persons_depth_not_the_walls(scale) -> None:
    """Joints at the person's centre, on its left edge (a window half on the wall) and just left
    of it (a hand in front of the wall): z = 2.0 m within 2 cm; x, y back-projected within 1 cm.
    scale 2: a half-resolution depth image with its own (scaled) K gives the same."""
    metres = scene_depth_m(scale)
    k = [K[0] / scale, 0, (K[2] + 0.5) / scale - 0.5, 0, K[4] / scale, (K[5] + 0.5) / scale - 0.5, 0, 0, 1]
    depth = depth_frame((metres * 1000).astype(np.uint16), "16UC1", k, "depth_optical", (H, W), K)
    joints = [(80.0, 60.0), (60.0, 60.0), (58.0, 50.0), (79.5, 100.0)]
    (p3,) = keypoints_3d(person(joints), depth, scene_labels(), [PERSON])
    assert p3.track_id == 7 and p3.keypoints.shape == (4, 4)
    np.testing.assert_allclose(p3.keypoints[:, 2], PERSON_M, atol=0.02)
    for (u, v), (x, y, z, score) in zip(joints, p3.keypoints):
        assert abs(x - (u - 79.5) * z / 100) < 0.01 and abs(y - (v - 59.5) * z / 100) < 0.01
        assert score == pytest.approx(0.8)
    # without the mask the edge joint's window is mostly wall: its median is the wall's
    (no_mask,) = keypoints_3d(person(joints), depth, None, [PERSON])
    assert no_mask.keypoints[2, 2] == pytest.approx(WALL_M)


def test_no_valid_depth_is_nan_and_the_score_is_kept() -> None:
    metres = scene_depth_m()
    metres[50:70, 70:90] = np.nan                           # a hole in the depth around the centre
    depth = depth_frame(metres, "32FC1", K, "depth", (H, W))
    (p3,) = keypoints_3d(person([(80.0, 60.0), (500.0, 60.0)]), depth, scene_labels(), [PERSON])
    assert np.isnan(p3.keypoints[:, :3]).all()              # in the hole; outside the image
    np.testing.assert_allclose(p3.keypoints[:, 3], 0.8)


def test_a_depth_image_that_is_not_the_colour_view_is_refused() -> None:
    metres = scene_depth_m(2)
    wrong = [60.0, 0, 39.5, 0, 50.0, 29.5, 0, 0, 1]          # fx 60 where the scaled colour fx is 50
    with pytest.raises(DepthError, match="not the colour image .* at another resolution"):
        depth_frame(metres, "32FC1", wrong, "depth", (H, W), K)
    with pytest.raises(DepthError, match="without the colour camera_info"):
        depth_frame(metres, "32FC1", [50.0, 0, 39.5, 0, 50.0, 29.5, 0, 0, 1], "depth", (H, W), None)
    with pytest.raises(DepthError, match="no intrinsics"):
        depth_frame(scene_depth_m(), "32FC1", [0.0] * 9, "depth", (H, W), K)


def test_the_point_cloud_is_the_label_image_in_metres() -> None:
    depth = depth_frame(scene_depth_m(), "32FC1", K, "depth", (H, W))
    labels = scene_labels()
    cloud = labelled_points(labels, depth, stride=1, max_range=10.0)
    assert len(cloud) == H * W and cloud.dtype.names == ("x", "y", "z", "label")
    v, u = np.divmod(np.arange(H * W), W)                   # row-major pixel order
    np.testing.assert_array_equal(cloud["label"], labels.reshape(-1))       # each point's own label
    np.testing.assert_allclose(cloud["z"], np.where(labels.reshape(-1) == PERSON, PERSON_M, WALL_M))
    np.testing.assert_allclose(cloud["x"], (u - 79.5) * cloud["z"] / 100, atol=1e-5)
    np.testing.assert_allclose(cloud["y"], (v - 59.5) * cloud["z"] / 100, atol=1e-5)
    # stride 4: every 4th pixel both ways; 3 m: the person only; classes: the wall only
    strided = labelled_points(labels, depth, stride=4)
    assert len(strided) == (H // 4) * (W // 4)
    assert set(labelled_points(labels, depth, stride=2, max_range=3.0)["label"]) == {PERSON}
    walls = labelled_points(labels, depth, stride=2, classes=[WALL])
    assert set(walls["label"]) == {WALL} and np.allclose(walls["z"], WALL_M)


def test_labels_at_network_resolution_and_colours() -> None:
    """A label image at half the size still gives each point the label of its pixel; with a
    palette each point carries its class colour packed as PCL's rgb."""
    labels = scene_labels()[::2, ::2]                        # network-resolution labels
    depth = depth_frame(scene_depth_m(), "32FC1", K, "depth", (H, W))
    palette = np.zeros((19, 3), np.uint8)
    palette[PERSON], palette[WALL] = (220, 20, 60), (70, 70, 70)
    cloud = labelled_points(labels, depth, stride=2, palette=palette)
    assert set(cloud["label"]) == {PERSON, WALL}
    np.testing.assert_allclose(cloud["z"], np.where(cloud["label"] == PERSON, PERSON_M, WALL_M))
    rgb = cloud["rgb"].view(np.uint32)
    assert set(rgb[cloud["label"] == PERSON]) == {(220 << 16) | (20 << 8) | 60}
