"""The CUDA path, checked where a GPU is: run by tools/gpu-check (skipped in `make test`, which has
no GPU). `tools/gpu-check --dry-run` runs them on the CPU at small sizes (SEGPP_CHECK_DEVICE=cpu,
SEGPP_CHECK_SMALL=1), so the checks themselves are exercised in CI.

Against the CPU in float32: labels per preset and precision (agreement >= 99.5 % in float32,
>= 99 % in 16 bits), no NaN, grouped means of a 1000-token group, identical results on repeat,
no host synchronisation in a steady-state frame but the result copy, stable memory over 100
preset switches, a CUDA graph per preset equal to the eager pass, keypoints within 0.5 px, and
same-size frames of one batch (two cameras) each getting what it gets alone, and full-resolution
labels on the device within the exactness rule of the CPU's label kernel (test/label_exactness.py).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from segpp_ros.inference import PoseEstimator, Segmenter, person_boxes
from segpp_ros.model import PRESETS
from segpp_ros.training.data.scenes import render_scene

DEVICE = os.environ.get("SEGPP_CHECK_DEVICE", "cuda")
SMALL = os.environ.get("SEGPP_CHECK_SMALL") == "1"
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="no CUDA device: tools/gpu-check runs these where one is lent "
                                       "(tools/gpu-check --dry-run runs them on the CPU)")
ON_CUDA = DEVICE.startswith("cuda")
SIZE = (128, 256) if SMALL else (512, 1024)
PRECISIONS = ["fp32", "fp16", "bf16"] if ON_CUDA else ["fp32"]


@pytest.fixture(scope="module")
def scene():
    return render_scene(10_000_321, *SIZE)


@pytest.fixture(scope="module")
def cpu_labels(scene):
    seg = Segmenter(None, device="cpu", precision="fp32")
    return {preset: (seg.set_merge(preset), seg(scene.image).labels)[1] for preset in PRESETS}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_labels_agree_with_the_cpu_per_preset(scene, cpu_labels, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    seg = Segmenter(None, device=DEVICE, precision=precision)
    floor = 0.995 if precision == "fp32" else 0.99
    for preset in PRESETS:
        seg.set_merge(preset)
        with torch.inference_mode():
            logits = seg.model(torch.zeros(1, 3, 64, 64, device=seg.device, dtype=seg.dtype))
        assert not logits.isnan().any(), preset
        agreement = float((seg(scene.image).labels == cpu_labels[preset]).mean())
        assert agreement >= floor, f"{preset} {precision}: {100 * agreement:.2f} % of the CPU's labels"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_grouped_mean_of_a_large_group_on_the_device(dtype):
    from segpp_ros.model.merge import _grouped_mean

    slot = torch.zeros(1, 1000, dtype=torch.long, device=DEVICE)
    x = (torch.full((1, 1000, 8), 1.3, device=DEVICE) + torch.linspace(0, 0.01, 1000, device=DEVICE)[None, :, None])
    want = _grouped_mean(slot, 1)(x.float().to(dtype).float())
    got = _grouped_mean(slot, 1)(x.to(dtype)).float()
    torch.testing.assert_close(got, want.to(dtype).float(), rtol=0, atol=0)


def test_the_same_input_gives_the_same_labels(scene):
    seg = Segmenter(None, device=DEVICE, merge="hq")
    first = seg(scene.image).labels
    for _ in range(3):
        np.testing.assert_array_equal(seg(scene.image).labels, first)


def test_full_resolution_labels_on_the_device_keep_the_exactness_rule():
    """The device path (every class map resized on the device, then the argmax) from float32
    logits of a real frame at 1080p (small: 240x320): where its labels differ from the CPU
    kernel's, the classes tie within the rule of test/label_exactness.py."""
    from segpp_ros.inference.label_kernel import cell_labels
    from segpp_ros.inference.labels import upsampled_argmax

    from .label_exactness import violations

    size = (240, 320) if SMALL else (1080, 1920)
    image = render_scene(10_000_322, *size).image
    seg = Segmenter(None, device="cpu", max_side=256)
    with torch.inference_mode():
        logits = seg.forward(seg._network_input(torch.from_numpy(image)[None], (size[0] * 256 // size[1], 256)))
        on_device = upsampled_argmax(logits.to(DEVICE), size).cpu().numpy()
    array = logits[0].numpy()
    found = violations(array, on_device, cell_labels(array, size))
    assert found["bad"] == 0, found


@pytest.mark.skipif(not ON_CUDA, reason="host synchronisation is a CUDA notion")
def test_a_steady_state_frame_synchronises_only_for_its_result(scene):
    seg = Segmenter(None, device=DEVICE, merge="fast")
    for _ in range(3):
        seg(scene.image, color=True, overlay_alpha=0.5)          # warm-up, graph capture, index tables
    h, w = scene.image.shape[:2]
    from segpp_ros.inference.segmenter import network_size

    torch.cuda.set_sync_debug_mode("error")
    try:
        with seg.stream():
            results, _ = seg.device_results([scene.image[None]], "input", network_size(h, w, seg.max_side), True,
                                              0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert results[0][0].shape == (h, w)


@pytest.mark.skipif(not ON_CUDA, reason="device memory is a CUDA notion")
def test_memory_is_stable_over_100_preset_switches(scene):
    seg = Segmenter(None, device=DEVICE)
    presets = list(PRESETS)
    for preset in presets:                                        # every graph and table once
        seg.set_merge(preset)
        seg(scene.image)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for i in range(100):
        seg.set_merge(presets[i % len(presets)])
        seg(scene.image)
    torch.cuda.synchronize()
    grown = (torch.cuda.memory_allocated() - before) / 2**20
    assert grown < 16, f"device memory grew by {grown:.1f} MB over 100 switches"


def test_a_graph_per_preset_equals_the_eager_pass(scene):
    graphed = Segmenter(None, device=DEVICE, precision="fp32", cuda_graphs=True)
    eager = Segmenter(None, device=DEVICE, precision="fp32", cuda_graphs=False)
    for preset in PRESETS:
        graphed.set_merge(preset)
        eager.set_merge(preset)
        for _ in range(2):
            np.testing.assert_array_equal(graphed(scene.image).labels, eager(scene.image).labels)
    assert graphed.forward.failures == {}
    assert graphed.forward.captured == (len(PRESETS) if ON_CUDA else 0)


def test_keypoints_within_half_a_pixel_of_the_cpu():
    scene = render_scene(10_000_910, 240, 320)
    boxes = person_boxes(scene.labels, (11, 12), min_area=100)
    if not boxes:
        pytest.skip("no person in the test scene")
    cpu = PoseEstimator(None, device="cpu", precision="fp32")(scene.image, boxes)
    dev = PoseEstimator(None, device=DEVICE, precision="fp32")(scene.image, boxes)
    a = np.stack([p.keypoints for p in cpu.persons])
    b = np.stack([p.keypoints for p in dev.persons])
    sure = a[..., 2] > 0.3
    shift = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)[sure]
    assert np.median(shift) <= 0.5 and np.percentile(shift, 90) <= 2.0, (np.median(shift), shift.max())


def test_two_same_size_cameras_in_one_batch_get_their_own_results():
    """Same-size frames uploaded within one call share a pinned staging buffer: the second must
    not overwrite the first while its copy is in flight (each gets what it gets alone)."""
    first, second = render_scene(10_000_910, 240, 320), render_scene(10_000_911, 240, 320)
    boxes = [person_boxes(s.labels, (11, 12), min_area=100) for s in (first, second)]
    pose = PoseEstimator(None, device=DEVICE, precision="fp32")
    together = pose.batch([(first.image, boxes[0]), (second.image, boxes[1])])
    for scene, b, result in zip((first, second), boxes, together):
        alone = pose(scene.image, b)
        assert len(result.persons) == len(alone.persons)
        for got, want in zip(result.persons, alone.persons):
            np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
    seg = Segmenter(None, device=DEVICE, precision="fp32", max_side=256)
    mixed = [first.image, second.image, render_scene(10_000_912, 480, 640).image]   # sizes A, A, B
    for image, result in zip(mixed, seg.batch(mixed)):
        np.testing.assert_array_equal(result.labels, seg(image).labels)
