"""Labels at full resolution from network-resolution logits (segpp_ros.inference.label_kernel)
against PyTorch's F.interpolate + argmax: the exactness rule (label_exactness.py) on real
frames at 480x640, 720p and 1080p, on constructed near-ties and exact ties, on every kind of
grid (upsampling by non-integer factors, downsampling, one row); the candidates it interpolates;
the frame path of the Segmenter and its memory."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpp_ros.inference import Segmenter
from segpp_ros.inference.label_kernel import cell_labels, cell_labels_counted, sample_grid
from segpp_ros.inference.labels import upsampled_argmax
from segpp_ros.inference.preprocess import normalise
from segpp_ros.samples import sample_frames

from .conftest import one_thread
from .label_exactness import violations


def torch_labels(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear",
                         align_corners=False).max(1).indices[0].numpy()


@pytest.mark.parametrize("source,target", [(36, 270), (144, 1080), (7, 7), (10, 33), (1, 3), (45, 20), (5, 1)])
def test_the_sample_grid_is_pytorchs(source, target) -> None:
    """Upsampling an index ramp reproduces PyTorch's positions: its output at each pixel is
    i0 w0 + i1 w1 of our grid, to float32 rounding."""
    i0, i1, w0, w1 = sample_grid(source, target)
    ramp = torch.arange(source, dtype=torch.float32).view(1, 1, source, 1).expand(1, 1, source, 2)
    theirs = F.interpolate(ramp.contiguous(), size=(target, 2), mode="bilinear", align_corners=False)[0, 0, :, 0]
    np.testing.assert_allclose(i0 * w0 + i1 * w1, theirs.numpy(), atol=1e-5)
    assert (i0 >= 0).all() and (i1 < source).all() and (i1 - i0 <= 1).all() and np.allclose(w0 + w1, 1)


@pytest.fixture(scope="module")
def embedded():
    return Segmenter(None, device="cpu", max_side=256)


@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (1080, 1920)])
def test_real_frames_keep_the_rule_at_every_size(embedded, size) -> None:
    """Every bundled frame, resized to the camera size: the network's logits through the kernel
    and through PyTorch; where the labels differ the two classes tie within the rule."""
    differing = 0
    for path in sample_frames():
        image = cv2.cvtColor(cv2.resize(cv2.imread(str(path)), size[::-1], interpolation=cv2.INTER_AREA),
                             cv2.COLOR_BGR2RGB)
        with torch.inference_mode(), one_thread():
            x = embedded._network_input(torch.from_numpy(image)[None], (size[0] * 256 // size[1], 256))
            logits = embedded.forward(x)[0].float().numpy()
        ours = cell_labels(logits, size)
        theirs = torch_labels(logits, size)
        found = violations(logits, ours, theirs)
        assert found["bad"] == 0, (path.name, size, found)
        differing += found["differing"]
    assert differing < 1e-5 * size[0] * size[1] * len(sample_frames()), differing


def test_near_ties_and_exact_ties() -> None:
    """Class pairs a few float32 ulps apart everywhere, exact copies (the lower class wins, as
    PyTorch's first maximum), a constant map, and classes that win nowhere near others."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (12, 24, 40)).astype(np.float32)
    logits[1] = logits[0]                                           # exact tie: class 0 wins
    logits[3] = np.nextafter(logits[2], np.float32(np.inf))         # one ulp above class 2
    logits[5] = logits[4] * np.float32(1 + 3e-7)                    # relative near-ties
    logits[6] = 2.5                                                 # a constant map
    logits[7] = logits[8] - np.float32(1e-6)
    size = (173, 299)
    ours, theirs = cell_labels(logits, size), torch_labels(logits, size)
    found = violations(logits, ours, theirs)
    assert found["bad"] == 0, found
    assert not (ours == 1).any() and (ours == 0).any()               # a copy of class 0 never wins
    # every pixel, not only the differing ones, holds a class within the rule
    assert violations(logits, ours)["bad"] == 0


@pytest.mark.parametrize("classes,source,size", [(19, (36, 64), (270, 480)), (150, (30, 40), (240, 320)),
                                                 (3, (10, 10), (33, 47)), (5, (40, 60), (17, 23)),
                                                 (4, (1, 5), (3, 11)), (2, (6, 1), (13, 4)), (300, (9, 12), (40, 50))])
def test_random_logits_on_every_kind_of_grid(classes, source, size) -> None:
    """Up and down, by non-integer factors, one row or column, more than 256 classes (uint16)."""
    logits = (torch.randn(classes, *source) * 4).numpy()
    dtype = np.dtype(np.uint8 if classes <= 256 else np.uint16)
    ours = cell_labels(logits, size, dtype)
    assert ours.dtype == dtype and ours.shape == size
    assert violations(logits, ours, torch_labels(logits, size))["bad"] == 0


def test_only_candidates_that_can_win_are_interpolated(embedded) -> None:
    """On a real 1080p frame almost all cells agree at their corners; the kernel interpolates
    a small fraction of what resizing every class map does."""
    image = cv2.cvtColor(cv2.imread(str(sample_frames()[3])), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)
    with torch.inference_mode():
        logits = embedded.forward(embedded._network_input(torch.from_numpy(image)[None], (144, 256)))[0].numpy()
    _, interpolations = cell_labels_counted(logits, (1080, 1920))
    assert interpolations < 0.15 * 19 * 1080 * 1920, interpolations / (19 * 1080 * 1920)


def test_the_segmenters_paths(embedded) -> None:
    """'fast' (the CPU's default) resizes the uint8 frame (within a grey level of the float
    resize) and makes the labels with the kernel; 'classic' is the reference path; both give the
    kernel's labels from the same logits, and 'fast' is refused on a non-CPU device."""
    assert embedded.frame_path == "fast"
    classic = Segmenter(None, device="cpu", max_side=256, frame_path="classic")
    image = cv2.cvtColor(cv2.imread(str(sample_frames()[0])), cv2.COLOR_BGR2RGB)
    with torch.inference_mode():
        pixels = torch.from_numpy(image)[None]
        small = F.interpolate(pixels.permute(0, 3, 1, 2), size=(128, 256), mode="bilinear", align_corners=False,
                              antialias=True).permute(0, 2, 3, 1).float()
        exact = F.interpolate(pixels.permute(0, 3, 1, 2).float(), size=(128, 256), mode="bilinear",
                              align_corners=False, antialias=True).permute(0, 2, 3, 1)
        assert float((small - exact).abs().max()) <= 1.0                     # at most a grey level
        fast_input = embedded._network_input(pixels, (128, 256))
        torch.testing.assert_close(fast_input, normalise(small.to(torch.uint8)))
        logits = embedded.forward(fast_input)
    with one_thread():
        fast = embedded(image)
    np.testing.assert_array_equal(fast.labels, cell_labels(logits[0].numpy(), image.shape[:2]))
    assert violations(logits[0].numpy(), fast.labels, upsampled_argmax(logits, image.shape[:2]).numpy())["bad"] == 0
    reference = classic(image).labels
    assert (reference == fast.labels).mean() > 0.995                 # the input's rounding moves few pixels
    with pytest.raises(ValueError, match="frame_path"):
        Segmenter(None, device="cpu", frame_path="quick")


def test_the_fast_path_allocates_no_class_maps_at_full_resolution(tmp_path) -> None:
    """A 1080p frame of a 19- and a 150-class model: on the fast path what PyTorch and NumPy
    allocate (the uint8 resize's buffers, the labels, network-size tensors) grows with the classes
    only by their network-resolution logits and stays below two float maps at 1080p; the
    classic path holds class maps at 1080p."""
    from segpp_ros.inference.timing import peak_memory_mb
    from segpp_ros.model import build_model, save_model

    from .conftest import TINY

    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    plane_mb = 4 * 1080 * 1920 / 2**20                                # one float32 class map at 1080p
    peaks = {}
    for classes in (19, 150):
        weights = tmp_path / f"c{classes}.safetensors"
        save_model(build_model(TINY, num_classes=classes).eval(), weights)
        for path in ("fast", "classic"):
            seg = Segmenter(str(weights), device="cpu", max_side=256, frame_path=path)
            seg(image)                                                # compiled and warm
            tracemalloc.start()
            seg(image)
            numpy_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            torch_mb = peak_memory_mb(lambda: seg(image), seg.device)
            if torch_mb is None:
                pytest.skip("the profiler reports no allocations on this build")
            peaks[path, classes] = torch_mb + numpy_mb
    # more classes cost only their logits at the network's output resolution (144x256 / 4)
    logits_mb = (150 - 19) * 36 * 64 * 4 / 2**20
    assert abs(peaks["fast", 150] - peaks["fast", 19]) < 2 * logits_mb, peaks
    assert peaks["fast", 150] < 2 * plane_mb, peaks
    assert peaks["classic", 150] > 10 * plane_mb, peaks               # what the kernel avoids
