"""Inference core and the offline runner (segpp-offline) on a tiny saved model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpp_ros.cli import offline
from segpp_ros.inference import Segmenter, network_size
from segpp_ros.inference.preprocess import to_tensor
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES
from segpp_ros.model import build_model, save_model

from .conftest import TINY, one_thread, randomize_batchnorm


@pytest.fixture
def tiny_weights(tmp_path):
    model = randomize_batchnorm(build_model(TINY, num_classes=4, meta={
        "classes": ["a", "b", "c", "d"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]}))
    path = tmp_path / "tiny.safetensors"
    save_model(model.eval(), path)
    return path, model


def test_labels_equal_the_model_argmax_at_input_resolution(tiny_weights) -> None:
    path, model = tiny_weights
    seg = Segmenter(path, device="cpu", merge="hq")
    image = np.random.default_rng(0).integers(0, 256, (70, 101, 3), dtype=np.uint8)
    result = seg(image)
    model.set_merge("hq")
    with torch.inference_mode():
        logits = F.interpolate(model(to_tensor(image)), size=(70, 101), mode="bilinear", align_corners=False)
    assert result.labels.shape == (70, 101) and result.labels.dtype == np.uint8
    assert np.array_equal(result.labels, logits.argmax(1)[0].numpy())
    assert seg.classes == ["a", "b", "c", "d"]
    assert seg.colorize(result.labels)[0, 0].tolist() == seg.palette[result.labels[0, 0]].tolist()
    assert seg.overlay(image, result.labels, 1.0).tolist() == seg.colorize(result.labels).tolist()


def test_max_side_and_network_output(tiny_weights) -> None:
    seg = Segmenter(tiny_weights[0], device="cpu", max_side=64)
    image = np.zeros((100, 200, 3), np.uint8)
    assert network_size(100, 200, 64) == (32, 64)
    assert seg(image).labels.shape == (100, 200)
    assert seg(image, output="network").labels.shape == (32, 64)


def test_bad_settings_are_clear_errors(tiny_weights) -> None:
    with pytest.raises(ValueError, match="precision"):
        Segmenter(tiny_weights[0], device="cpu", precision="int8")
    seg = Segmenter(tiny_weights[0], device="cpu")
    with pytest.raises(ValueError, match="RGB uint8"):
        seg(np.zeros((10, 10), np.uint8))


def test_offline_writes_pngs_and_reports(tmp_path, capsys) -> None:
    weights = tmp_path / "street.safetensors"
    save_model(build_model(TINY, num_classes=19, meta={"classes": list(CITYSCAPES_CLASSES)}).eval(), weights)
    out = tmp_path / "demo"
    code = offline.main(["--weights", str(weights), "--scenes", "2", "--size", "64x128", "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"scene00{i}_{k}.png" for i in range(2) for k in ("color", "label", "overlay")]
    text = capsys.readouterr().out
    assert "mIoU over all frames" in text and "frames/s" in text
    assert "scene000: 64x128 " in text                  # HEIGHTxWIDTH, as --size takes it


@pytest.mark.parametrize("classes,size,out", [(19, (36, 64), (270, 480)), (150, (30, 40), (240, 320)),
                                             (3, (10, 10), (33, 47))])
def test_banded_argmax_equals_the_all_at_once_argmax(classes, size, out) -> None:
    from segpp_ros.inference.labels import upsampled_argmax

    logits = torch.randn(1, classes, *size)
    logits[:, 1] = logits[:, 0]                    # exact ties: the lower class must win
    logits[:, -1] = logits[:, 0]
    want = F.interpolate(logits, size=out, mode="bilinear", align_corners=False).max(1).indices[0]
    for budget in (1, 4 * out[0] * out[1] * 2, 4 * out[0] * out[1] * 5, 2**40):
        assert torch.equal(upsampled_argmax(logits, out, budget), want), budget


def test_banded_argmax_memory_does_not_grow_with_classes() -> None:
    """Peak memory of the label step for 19 and 150 classes at 720x1280: bounded by the budget."""
    from segpp_ros.inference.labels import upsampled_argmax
    from segpp_ros.inference.timing import peak_memory_mb

    out = (720, 1280)
    plane_mb = 4 * out[0] * out[1] / 2**20                  # one float32 class map: 3.5 MB
    budget = int(8 * plane_mb * 2**20)
    peaks = {}
    for classes in (19, 150):
        logits = torch.randn(1, classes, 45, 80)
        peaks[classes] = peak_memory_mb(lambda: upsampled_argmax(logits, out, budget), torch.device("cpu"))
    if None in peaks.values():
        pytest.skip("the profiler reports no allocations on this build")
    # the budget's maps, plus the running max, its index (int64) and the comparison masks
    bound = budget / 2**20 + 8 * plane_mb
    assert peaks[150] <= bound and peaks[19] <= bound, (peaks, bound)
    all_at_once = peak_memory_mb(lambda: F.interpolate(torch.randn(1, 150, 45, 80), size=out, mode="bilinear",
                                                       align_corners=False).max(1), torch.device("cpu"))
    assert all_at_once > 4 * bound                          # what the bands avoid: 150 maps of 3.5 MB


def test_colours_and_overlay_from_the_core_equal_the_numpy_ones(tiny_weights) -> None:
    """Computed with the labels (on the device when there is one): the same bytes as colorize()
    and overlay() of the returned labels."""
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    seg = Segmenter(tiny_weights[0], device="cpu", max_side=64)
    for output in ("input", "network"):
        got = seg(image, output=output, color=True, overlay_alpha=0.4)
        np.testing.assert_array_equal(got.color, seg.colorize(got.labels))
        np.testing.assert_array_equal(got.overlay, seg.overlay(image, got.labels, 0.4))
        np.testing.assert_array_equal(got.labels, seg(image, output=output).labels)


def test_a_batch_gives_each_image_its_own_labels(tiny_weights) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    seg = Segmenter(tiny_weights[0], device="cpu")
    batch = seg.batch(images)
    assert len(batch) == 3 and len({r.network_ms for r in batch}) == 1        # one forward pass
    for image, result in zip(images, batch):
        np.testing.assert_array_equal(result.labels, seg(image).labels)


def test_a_batch_of_cameras_of_different_sizes_gives_each_its_own_labels(tiny_weights) -> None:
    """Images of different sizes that scale to one network input size share one forward pass,
    each labelled at its own size exactly as alone; sizes that do not are refused."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((96, 128, 3), (120, 160, 3), (48, 64, 3))]
    seg = Segmenter(tiny_weights[0], device="cpu", max_side=64, merge="2x2")
    batch = seg.batch(images, color=True, overlay_alpha=0.3)
    assert len({r.network_ms for r in batch}) == 1
    for image, result in zip(images, batch):
        alone = seg(image, color=True, overlay_alpha=0.3)
        assert result.labels.shape == image.shape[:2]
        for got, want in ((result.labels, alone.labels), (result.color, alone.color), (result.overlay, alone.overlay)):
            np.testing.assert_array_equal(got, want)
    for output in ("network",):
        assert all(r.labels.shape == (48, 64) for r in seg.batch(images, output=output))
    with pytest.raises(ValueError, match="one network input size"):
        seg.batch([images[0], rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)])


def test_auto_precision_is_float32_on_the_cpu(tiny_weights) -> None:
    import torch

    from segpp_ros.inference.loader import resolve_precision

    assert Segmenter(tiny_weights[0], device="cpu").dtype == torch.float32
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_16_bit_precisions_run_on_the_cpu(precision) -> None:
    """The input is resized on the way in (180x240 -> 96x128): PyTorch's CPU antialiased resize
    has no 16-bit kernel, which once made every 16-bit frame on the CPU fail."""
    from segpp_ros.training.data.scenes import render_scene

    image = render_scene(10_000_801, 180, 240).image
    with one_thread():
        half = Segmenter(None, device="cpu", max_side=128, precision=precision)
        assert half.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        labels = half(image).labels
        np.testing.assert_array_equal(half(image).labels, labels)             # the same on repeat
        full = Segmenter(None, device="cpu", max_side=128)(image).labels
    assert (labels == full).mean() >= 0.99
