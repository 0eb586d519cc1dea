"""Keep-latest slot, pipeline stage, rolling statistics (no ROS)."""
from __future__ import annotations

import math
import threading
import time

from segpp_ros.ros.realtime import Counters, LatestPerKey, LatestSlot, RateMeter, SlotWorker, Window


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.overwritten == 4
    assert slot.take(timeout=0) == 4
    assert slot.take(timeout=0.01) is None            # empty: times out
    slot.close()
    assert slot.take() is None                       # closed: returns at once


def test_latest_per_key_keeps_the_newest_of_each_key_oldest_first() -> None:
    slots: LatestPerKey[str] = LatestPerKey(max_items=2)
    for item, key in (("front0", "front"), ("rear0", "rear"), ("front1", "front"), ("left0", "left")):
        slots.put(item, key)
    assert slots.overwritten_by == {"front": 1} and slots.overwritten == 1
    assert slots.take(timeout=0) == ["rear0", "front1"]     # oldest first, at most max_items
    assert slots.take(timeout=0) == ["left0"]               # the rest waited for the next take
    assert slots.take(timeout=0.01) is None
    slots.put("x", "front")
    slots.clear()
    assert slots.take(timeout=0.01) is None
    slots.close()
    assert slots.take() is None


def _stream(slots: LatestPerKey, key: str, period: float, frames: int) -> threading.Thread:
    """A camera: ``frames`` items (key, time put) every ``period`` s on its own thread."""
    def run() -> None:
        for _ in range(frames):
            slots.put((key, time.monotonic()), key)
            time.sleep(period)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_batch_window_waits_for_cameras_due_and_not_for_a_stopped_one() -> None:
    # two cameras at 5 Hz, half a period apart: with a window longer than that, each take gets
    # a frame of both (the front's waits ~0.1 s for the rear's); then the rear camera stops and,
    # after at most two of its intervals, the front's frames are no longer held back at all
    slots: LatestPerKey[tuple[str, float]] = LatestPerKey(window_s=0.15)
    front = _stream(slots, "front", 0.2, 16)
    time.sleep(0.1)
    rear = _stream(slots, "rear", 0.2, 6)
    takes = []
    while front.is_alive():
        items = slots.take(timeout=0.5)
        if items:
            now = time.monotonic()
            takes.append((sorted(key for key, _ in items), max(now - put for _, put in items), rear.is_alive()))
    both = [t for t in takes if t[0] == ["front", "rear"]]
    assert len(both) >= 3, takes                 # while both ran, their frames were taken together
    alone = takes[-6:]                           # the rear stopped more than a second ago
    assert all(names == ["front"] and waited < 0.1 for names, waited, _ in alone), takes
    # and a window never holds a frame longer than itself
    assert all(waited < 0.15 + 0.1 for _, waited, _ in takes), takes


def test_slot_worker_takes_the_newest_item_and_survives_errors() -> None:
    seen: list[int] = []
    errors: list[Exception] = []
    gate, busy = threading.Event(), threading.Event()

    def handle(item: int) -> None:
        busy.set()
        gate.wait(5)                                  # busy while the producer puts more
        if item == 3:
            raise ValueError("bad item")
        seen.append(item)

    worker: SlotWorker[int] = SlotWorker("test-stage", handle, errors.append)
    worker.start()
    worker.put(0)
    assert busy.wait(5)                               # item 0 is taken, the handler blocks
    for i in (1, 2, 3):
        worker.put(i)                                 # 1 and 2 are overwritten while it is busy
    gate.set()
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.put(4)                                     # the stage goes on after the error
    while seen[-1:] != [4] and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.close()
    assert seen == [0, 4]
    assert [str(e) for e in errors] == ["bad item"]
    assert worker.slot.overwritten == 2


def test_window_rate_and_counters() -> None:
    window = Window(size=3)
    assert math.isnan(window.percentile(50))
    for v in (100.0, 1.0, 2.0, 3.0):                  # the first falls out of the window
        window.add(v)
    assert window.percentile(50) == 2.0
    rate = RateMeter(window_s=1.0)
    for t in (10.0, 10.25, 10.5, 10.75, 11.0):
        rate.tick(t)
    assert rate.rate(11.0) == 4.0 and rate.total == 5 and rate.last == 11.0
    assert rate.rate(20.0) == 0.0                     # everything aged out
    counters = Counters()
    counters.bump("bad_input_step")
    counters.bump("bad_input_step", 2)
    assert dict(counters) == {"bad_input_step": 3}


def _wait(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(condition())


def test_a_failing_error_handler_does_not_end_the_stage(capsys) -> None:
    """The handler of an item's exception raising itself (e.g. a logger that throws) used to end
    the thread silently."""
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise ValueError("bad item")
        seen.append(item)

    reported = threading.Event()

    def broken_handler(err: Exception) -> None:
        reported.set()
        raise RuntimeError("the logger is broken too")

    worker: SlotWorker[int] = SlotWorker("test-stage", handle, broken_handler)
    worker.start()
    worker.put(1)
    assert reported.wait(5)
    time.sleep(0.05)                                   # let the failed handler unwind
    worker.put(2)
    assert _wait(lambda: seen == [2]), "the stage stopped after its error handler failed"
    assert worker.alive and worker.death is None and worker.handler_failures == 1
    worker.close()
    assert "the error handler failed (RuntimeError: the logger is broken too)" in capsys.readouterr().err


def test_a_stage_killed_by_a_base_exception_is_recorded_and_restarts() -> None:
    class Killed(BaseException):
        pass

    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise Killed("gone")
        seen.append(item)

    worker: SlotWorker[int] = SlotWorker("test-stage", handle, lambda err: None)
    assert not worker.restart()                        # never started: nothing to restart
    worker.start()
    worker.put(1)
    assert _wait(lambda: not worker.alive)
    assert worker.death == "Killed: gone"
    assert worker.restart() and worker.restarts == 1 and worker.alive
    worker.put(2)
    assert _wait(lambda: seen == [2])
    worker.stop()
    assert worker.join(time.monotonic() + 5)
    assert not worker.restart()                        # stopped on purpose: stays stopped


def test_busy_since_marks_the_item_in_hand_and_join_keeps_its_deadline() -> None:
    gate = threading.Event()
    worker: SlotWorker[int] = SlotWorker("test-stage", lambda item: gate.wait(10), lambda err: None)
    worker.start()
    assert worker.busy_since is None
    before = time.monotonic()
    worker.put(1)
    assert _wait(lambda: worker.busy_since is not None)
    assert worker.busy_since >= before
    worker.stop()
    start = time.monotonic()
    assert not worker.join(start + 0.2)               # still inside the item: the deadline holds
    assert time.monotonic() - start < 2.0
    gate.set()
    assert worker.join(time.monotonic() + 5) and worker.busy_since is None


def test_rate_meter_counts_and_event_log() -> None:
    from segpp_ros.ros.realtime import EventLog

    rate = RateMeter(window_s=1.0)
    for t in (1.0, 1.5, 2.0, 2.6):
        rate.tick(t)
    assert rate.count(2.6) == 2 and rate.count(10.0) == 0
    log = EventLog(window_s=1.0)
    log.add("bad_input_encoding", "encoding 'nv12'", now=1.0)
    log.add("bad_input_encoding", "encoding 'nv12'", now=1.2)
    log.add("dropped_stale", "old", value=3.0, now=1.5)
    assert log.counts(1.5) == {"bad_input_encoding": 2, "dropped_stale": 1}
    assert log.latest["bad_input_encoding"] == "encoding 'nv12'"
    assert log.largest(1.5) == 3.0 and log.counts(2.3) == {"dropped_stale": 1} and log.largest(9.0) == 0.0
