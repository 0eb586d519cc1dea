"""Heatmap encoding/decoding, crop affines and top-down pose samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segpp_ros.inference.crops import box_to_affine, invert_affine, transform_points, warp_crop
from segpp_ros.inference.keypoints import decode_heatmaps, gaussian_heatmaps
from segpp_ros.training.data.pose import person_crops, render_pose_sample
from segpp_ros.training.data.scenes import render_scene

STRIDE = 4
IN_HW = (256, 192)
HM_HW = (64, 48)


def reference_gaussians(centres: np.ndarray, hw: tuple[int, int], sigma: float = 2.0) -> np.ndarray:
    """Independent encoder for the tests: exp(-d^2 / 2 sigma^2) around heatmap-px centres [K, 2]."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]]
    d2 = (xs[None] - centres[:, 0, None, None]) ** 2 + (ys[None] - centres[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32)


def random_centres(rng: np.random.Generator, n: int, margin: float) -> np.ndarray:
    """Heatmap-px centres at least ``margin`` from the map's border samples."""
    return np.column_stack([rng.uniform(margin, HM_HW[1] - 1 - margin, n), rng.uniform(margin, HM_HW[0] - 1 - margin, n)])


def test_gaussian_heatmaps_shape_peak_and_weights() -> None:
    kp = np.array([[40.0, 80.0, 2], [41.0, 13.0, 1], [10.0, 10.0, 0], [-3.0, 50.0, 2], [100.0, 255.6, 2]])
    hm, w = gaussian_heatmaps(kp, (255, 190), stride=STRIDE, sigma=2.0)
    assert hm.shape == (5, 64, 48) and hm.dtype == np.float32 and w.dtype == np.float32
    assert w.tolist() == [1, 1, 0, 0, 0]                   # v == 0 and outside the input get no target
    assert hm[0, 20, 10] == pytest.approx(1.0)             # (40, 80) / 4 is a sample: the peak is 1
    assert not hm[2:].any()
    np.testing.assert_allclose(hm[:2], reference_gaussians(kp[:2, :2] / STRIDE, (64, 48)), atol=1e-6)


@pytest.mark.parametrize("refine,tol", [("dark", 0.01), ("quarter", 0.25)])
def test_decode_recovers_subpixel_peaks(refine: str, tol: float) -> None:
    rng = np.random.default_rng(0)
    centres = random_centres(rng, 400, margin=5.0)
    d = decode_heatmaps(reference_gaussians(centres, HM_HW), stride=STRIDE, refine=refine)
    err = np.abs(d[:, :2] / STRIDE - centres)
    # quarter: the argmax is the nearest sample and the shift goes towards the true side, so each
    # axis is off by at most 0.25; DARK is exact for a log-quadratic peak up to the smoothing
    assert err.max() <= tol + 1e-6, err.max()
    assert np.all(d[:, 2] > 0.88)                           # score: the sampled maximum


def test_decode_near_the_border_never_worse_than_quarter() -> None:
    rng = np.random.default_rng(1)
    centres = random_centres(rng, 400, margin=1.0)          # argmax with both neighbours on each axis
    for refine in ("dark", "quarter"):
        d = decode_heatmaps(reference_gaussians(centres, HM_HW), stride=STRIDE, refine=refine)
        assert np.abs(d[:, :2] / STRIDE - centres).max() <= 0.25 + 1e-6, refine


def test_decode_is_robust_to_noise_and_takes_tensors_with_batch_dims() -> None:
    rng = np.random.default_rng(2)
    centres = random_centres(rng, 34, margin=5.0)
    hm = reference_gaussians(centres, HM_HW) + rng.normal(0, 0.03, (34, *HM_HW)).astype(np.float32)
    batch = torch.from_numpy(hm).reshape(2, 17, *HM_HW)
    d = decode_heatmaps(batch, stride=STRIDE)
    assert d.shape == (2, 17, 3) and isinstance(d, np.ndarray)
    assert np.abs(d.reshape(34, 3)[:, :2] / STRIDE - centres).max() < 0.25
    with pytest.raises(ValueError):
        decode_heatmaps(hm, refine="bogus")


def test_encode_decode_round_trip_in_input_pixels() -> None:
    rng = np.random.default_rng(3)
    kp = np.column_stack([rng.uniform(24, 168, 17), rng.uniform(24, 232, 17), np.full(17, 2.0)])
    hm, _ = gaussian_heatmaps(kp, IN_HW)
    d = decode_heatmaps(hm)
    assert np.abs(d[:, :2] - kp[:, :2]).max() < 0.05


@pytest.mark.parametrize("box,out_hw", [((100.0, 50.0, 160.0, 300.0), (256, 192)),   # tall: height decides
                                        ((10.0, 20.0, 400.0, 90.0), (256, 192)),     # wide: width decides
                                        ((5.5, 7.25, 6.0, 7.5), (64, 48))])          # tiny box
def test_affine_round_trip_and_box_placement(box: tuple[float, ...], out_hw: tuple[int, int]) -> None:
    a = box_to_affine(np.array(box), out_hw, padding=1.25)
    assert a.shape == (2, 3) and a.dtype == np.float64
    rng = np.random.default_rng(4)
    pts = rng.uniform(-50, 500, (3, 17, 2))
    back = transform_points(transform_points(pts, a), invert_affine(a))
    assert np.abs(back - pts).max() <= 0.5 and np.abs(back - pts).max() < 1e-9
    h, w = out_hw
    centre = transform_points(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), a)
    np.testing.assert_allclose(centre, [(w - 1) / 2, (h - 1) / 2], atol=1e-9)
    corners = transform_points(np.array([box[:2], box[2:]]), a)
    assert np.all(corners >= -0.5) and np.all(corners <= [w - 0.5, h - 0.5])
    if min(box[2] - box[0], box[3] - box[1]) >= 1:          # boxes under 1 px are widened to 1 px
        span = corners[1] - corners[0]
        # the padded box fills the crop along its deciding side and fits along the other
        assert max(span[0] / w, span[1] / h) == pytest.approx(1 / 1.25)


def test_warp_crop_uses_the_same_pixel_convention() -> None:
    image = np.zeros((120, 200, 3), np.uint8)
    image[37, 151] = 255
    a = box_to_affine(np.array([140.0, 30.0, 160.0, 45.0]), (64, 48))
    crop = warp_crop(image, a, (64, 48)).astype(np.float64)[..., 0]
    ys, xs = np.mgrid[0:64, 0:48]
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, transform_points(np.array([151.0, 37.0]), a), atol=0.05)


def test_person_crops_keypoints_are_transformed_scene_keypoints() -> None:
    scene = render_scene(0, 256, 512)
    crops = person_crops(scene, out_hw=(128, 96), min_visible=4, min_height_px=24)
    assert crops
    usable = [p for p in scene.persons if (p.keypoints[:, 2] == 2).sum() >= 4 and p.box[3] - p.box[1] >= 24]
    assert len(crops) == len(usable)
    for c, p in zip(crops, usable):
        assert c.image.shape == (128, 96, 3) and c.image.dtype == np.uint8
        np.testing.assert_allclose(c.keypoints[:, :2], transform_points(p.keypoints[:, :2], c.affine), atol=1e-3)
        np.testing.assert_array_equal(c.keypoints[:, 2], p.keypoints[:, 2])   # box padding keeps joints in
        np.testing.assert_array_equal(c.affine, box_to_affine(p.box, (128, 96), 1.25))


def test_render_pose_sample_is_deterministic_and_shows_a_person() -> None:
    a, b = render_pose_sample(7), render_pose_sample(7)
    assert a.image.shape == (256, 192, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert (a.keypoints[:, 2] == 2).sum() >= 6
    inside = a.keypoints[a.keypoints[:, 2] > 0, :2]
    assert np.all((inside >= -0.5) & (inside <= [191.5, 255.5]))
    small = render_pose_sample(8, out_hw=(128, 96))
    assert small.image.shape == (128, 96, 3) and (small.keypoints[:, 2] == 2).sum() >= 6


def test_gpu_crops_with_grid_sample_match_opencv_crops() -> None:
    """The GPU path's crops (grid_sample from the uploaded frame) equal OpenCV's warpAffine crops up
    to OpenCV's fixed-point weights: mean difference well under one grey level."""
    from segpp_ros.inference.crops import warp_crops_torch

    scene = render_scene(10_000_123, 240, 320)
    boxes = [p.box for p in scene.persons[:3]] or [np.array([40.0, 30.0, 120.0, 200.0])]
    boxes.append(np.array([-30.0, -20.0, 60.0, 90.0]))        # partly outside: zero padding
    affines = [box_to_affine(b, IN_HW) for b in boxes]
    frame = torch.as_tensor(scene.image).permute(2, 0, 1)[None].float()
    got = warp_crops_torch(frame, np.stack(affines), IN_HW)
    for crop, affine in zip(got, affines):
        want = warp_crop(scene.image, affine, IN_HW).astype(np.float32)
        diff = np.abs(crop.permute(1, 2, 0).numpy() - want)
        assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4, (diff.mean(), diff.max())


def test_float32_dark_decoding_agrees_with_float64() -> None:
    """The GPU path decodes in float32 (no float64 there): within 1e-3 px of the float64 decoding."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(6, 40, (40, 2))
    hm = reference_gaussians(centres, HM_HW) + rng.normal(0, 0.01, (40, *HM_HW)).astype(np.float32)
    f64 = decode_heatmaps(hm, stride=STRIDE, dtype=torch.float64)
    f32 = decode_heatmaps(hm, stride=STRIDE, dtype=torch.float32)
    np.testing.assert_allclose(f32, f64, atol=1e-3)
