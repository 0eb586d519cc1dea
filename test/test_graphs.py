"""CUDA graph bookkeeping on the CPU (inference.graphs): the device gate between frames and
captures, captures between frames only, retries, what a graph entry keeps alive, batch padding,
cold calls, TF32 off, and the pipeline deferring captures until its frames are out.

A graph's capture is the one thing a CPU cannot do: these tests drive GraphedForward through
``capture_emulated`` (a graph's contract: a static input read and a static output overwritten
by each replay) with ``on_device`` always true. The real captures run in tools/gpu-check."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from segpp_ros.inference.graphs import (CAPTURE_TRIES, RETRY_AFTER, DeviceSections, GraphedForward, capture_emulated,
                                        pad_batch, padded_batch)
from segpp_ros.model import build_model
from segpp_ros.model import merge as merge_module


def tiny_model(preset: str = "none") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("b0", num_classes=5).eval()
    model.set_merge(preset)
    return model


def graphed(model: torch.nn.Module, sections: DeviceSections | None = None, capture=capture_emulated,
            **kwargs) -> GraphedForward:
    return GraphedForward(model, key=lambda: model.merge, capture=capture, on_device=lambda x: True,
                          sections=sections or DeviceSections(), **kwargs)


# -- the device gate -----------------------------------------------------------------------------
def test_a_capture_waits_for_the_frames_in_flight_and_goes_before_new_ones() -> None:
    gate, order = DeviceSections(), []
    in_frame, frame_may_end, capture_waiting = threading.Event(), threading.Event(), threading.Event()

    def frame(name: str, hold: threading.Event | None = None) -> None:
        with gate.shared():
            order.append(f"{name} in")
            if hold is not None:
                in_frame.set()
                hold.wait(5)
            order.append(f"{name} out")

    def capture() -> None:
        capture_waiting.set()
        with gate.exclusive():
            order.append("capture")

    first = threading.Thread(target=frame, args=("A", frame_may_end))
    first.start()
    assert in_frame.wait(5)
    cap = threading.Thread(target=capture)
    cap.start()
    assert capture_waiting.wait(5)
    while not gate._waiting:                 # the capture is queued behind frame A
        time.sleep(0.001)
    later = threading.Thread(target=frame, args=("B",))
    later.start()
    time.sleep(0.05)
    assert order == ["A in"]                 # neither the capture nor frame B ran meanwhile
    frame_may_end.set()
    for t in (first, cap, later):
        t.join(5)
    assert order == ["A in", "A out", "capture", "B in", "B out"]


def test_a_capture_inside_a_device_section_of_its_own_thread_is_refused() -> None:
    gate = DeviceSections()
    with gate.shared(), gate.shared():       # reentrant
        with pytest.raises(RuntimeError, match="between frames"):
            with gate.exclusive():
                pass
    with gate.exclusive():                   # and free again afterwards
        pass


def test_two_models_capturing_while_the_other_runs_frames_never_overlap() -> None:
    """Segmentation and pose threads, each with its own GraphedForward on one gate, every call a
    new key at first: no capture ever runs while a frame's device section is open."""
    gate = DeviceSections()
    open_sections = [0]
    overlaps: list[str] = []
    lock = threading.Lock()

    def checked_capture(model, static_in, stream, pool):
        with lock:
            if open_sections[0]:
                overlaps.append(f"capture of {tuple(static_in.shape)} during {open_sections[0]} open sections")
        time.sleep(0.002)
        return capture_emulated(model, static_in, stream, pool)

    failed: list[BaseException] = []

    def worker(model: torch.nn.Module, shapes: list[tuple[int, ...]]) -> None:
        try:
            run(model, shapes)
        except BaseException as err:  # noqa: BLE001 -- raised in the test's thread below
            failed.append(err)

    def run(model: torch.nn.Module, shapes: list[tuple[int, ...]]) -> None:
        forward = graphed(model, gate, capture=checked_capture)
        for i in range(40):
            x = torch.randn(shapes[i % len(shapes)])
            with gate.shared():               # a frame's device section (timing.on_stream on CUDA)
                with lock:
                    open_sections[0] += 1
                time.sleep(0.001)
                with torch.inference_mode():
                    forward(x)
                with lock:
                    open_sections[0] -= 1
            forward.capture_pending()         # between frames, on the owning thread
        assert forward.captures == len({padded_batch(s[0]) for s in shapes})   # 1 and 3 -> 1, 4; 2 and 5 -> 2, 8

    threads = [threading.Thread(target=worker, args=(tiny_model(), [(1, 3, 32, 32), (3, 3, 32, 32)])),
               threading.Thread(target=worker, args=(tiny_model("hq"), [(2, 3, 32, 32), (5, 3, 32, 32)]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed, failed
    assert overlaps == []


# -- captures between frames, retries ----------------------------------------------------------------
def test_a_new_key_runs_eagerly_and_is_captured_between_frames_then_replayed() -> None:
    model = tiny_model("hq")
    forward = graphed(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        want = model(x)
        first = forward(x)
        assert forward.cold and forward.pending == 1 and forward.captured == 0
        assert forward.capture_pending() == 1 and forward.captured == 1
        again = forward(x)
        assert not forward.cold
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(again, want)


def test_a_failed_capture_is_retried_then_the_key_stays_eager() -> None:
    model = tiny_model()
    fails = [0]

    def failing(*args):
        fails[0] += 1
        raise RuntimeError("operation not permitted when stream is capturing")

    forward = graphed(model, capture=failing)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        for _ in range(CAPTURE_TRIES * (RETRY_AFTER + 2)):
            torch.testing.assert_close(forward(x), model(x))   # eager meanwhile, never an error
            forward.capture_pending()
    assert fails[0] == CAPTURE_TRIES                           # tried again, a bounded number of times
    key = next(iter(forward.failures))
    assert len(forward.failures[key]) == CAPTURE_TRIES and forward.captured == 0 and forward.pending == 0


def test_a_key_whose_merge_moved_on_before_its_capture_is_not_captured_with_the_wrong_merge() -> None:
    model = tiny_model("hq")
    forward = graphed(model)
    with torch.inference_mode():
        forward(torch.randn(1, 3, 32, 32))
        model.set_merge("fast")
        assert forward.capture_pending() == 0 and forward.captured == 0


# -- what an entry keeps alive ------------------------------------------------------------------------
def test_a_graph_keeps_every_index_table_it_reads_through_cache_eviction() -> None:
    """The captured pass's merge tables stay referenced by the graph entry after the bounded cache
    dropped them, so their memory is never reused under a live graph."""
    model = tiny_model("hq")
    forward = graphed(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        forward(x)
        forward.capture_pending()
    entry = next(iter(forward._graphs.values()))
    # hq merges stage 3's queries in 4x4 cells: at a 64x64 input its grid is 4x4
    used = merge_module._bipartite_partition(4, 4, 4, 4, torch.device("cpu"))
    assert any(t is used[0] for t in entry.tables) and any(t is used[2] for t in entry.tables)
    merge_module._bipartite_partition.cache_clear()
    merge_module._cell_slots.cache_clear()
    assert merge_module._bipartite_partition(4, 4, 4, 4, torch.device("cpu"))[0] is not used[0]
    assert any(t is used[0] for t in entry.tables)             # still the graph's
    assert entry.static_in.shape == (1, 3, 64, 64)


def test_tables_are_retained_only_inside_the_recording_and_on_its_thread() -> None:
    model = tiny_model("hq")
    with merge_module.retain_tables() as outer, torch.inference_mode():
        model(torch.randn(1, 3, 32, 32))
        other: list = []
        t = threading.Thread(target=lambda: other.append(model(torch.randn(1, 3, 48, 48))))
        t.start()
        t.join()
    assert outer and all(t.shape[0] <= 8 * 8 for t in outer)   # 32x32 input: stage-1 grid 8x8, not 12x12


# -- few keys ---------------------------------------------------------------------------------------------
def test_batches_are_padded_to_few_sizes_and_the_padding_never_shows() -> None:
    assert [padded_batch(n) for n in (1, 2, 3, 4, 5, 8, 9, 17, 64, 65)] == [1, 2, 4, 4, 8, 8, 16, 32, 64, 65]
    x = torch.arange(6.0).view(3, 2)
    assert pad_batch(x, 4).tolist() == [[0, 1], [2, 3], [4, 5], [4, 5]]
    model = tiny_model("hq")
    forward = graphed(model)
    with torch.inference_mode():
        for n in (3, 4, 3, 4):                                  # 3 and 4 persons: one graph
            x = torch.randn(n, 3, 32, 32)
            out = forward(x)
            forward.capture_pending()
            assert out.shape[0] == n
            torch.testing.assert_close(out, model(x), atol=1e-4, rtol=1e-4)
            assert torch.equal(out.argmax(1), model(x).argmax(1))
    assert forward.captures == 1


def test_eviction_keeps_the_most_recent_graphs() -> None:
    model = tiny_model()
    forward = graphed(model, max_graphs=2)
    with torch.inference_mode():
        for size in (32, 48, 64, 32):
            forward(torch.randn(1, 3, size, size))
            forward.capture_pending()
    assert [k[0][2] for k in forward._graphs] == [64, 32] and forward.captures == 4


# -- numerics -----------------------------------------------------------------------------------------------
def test_fp32_on_cuda_means_ieee_fp32_no_tf32() -> None:
    from segpp_ros.inference.loader import tune_backend

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        tune_backend(torch.device("cuda"))                       # sets flags only: runs without a GPU
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


# -- the pipeline defers captures until its frames are out ----------------------------------------------------
def test_the_pipeline_captures_after_its_step_and_the_budget_learns_no_cold_frame() -> None:
    from segpp_ros.inference import Segmenter
    from segpp_ros.inference.pipeline import SEGMENTATION, Frame, FramePipeline, FrameSettings

    seg = Segmenter(None, device="cpu", max_side=64)
    seg.forward = graphed(seg.model)
    pipeline = FramePipeline(seg)
    assert seg.defer_capture
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    settings = FrameSettings(max_side=64, budget_ms=1000.0)

    recorded: list[bool] = []        # last_cold at each budget.record: must never be True
    record = pipeline.budget.record
    pipeline.budget.record = lambda *args: (recorded.append(seg.last_cold), record(*args))[1]

    first = pipeline.segment([Frame(image, "f0")], settings)[0][0].labels
    assert seg.last_cold and seg.forward.pending == 1 and seg.forward.captured == 0   # nothing captured yet
    pipeline.between_frames(SEGMENTATION)           # as the node does once the frame is published
    assert seg.forward.captured == 1 and recorded == []
    colds = []
    for i in range(1, 12):
        if i == 6:
            seg.forward._graphs.clear()             # evicted: the next frame of that key runs eagerly again
        labels = pipeline.segment([Frame(image, f"f{i}")], settings)[0][0].labels
        colds.append(seg.last_cold)
        pipeline.between_frames(SEGMENTATION)
        if seg.model.merge.name == "none":
            np.testing.assert_array_equal(labels, first)
    assert any(colds) and not all(colds)
    assert True not in recorded and len(recorded) == colds.count(False)
