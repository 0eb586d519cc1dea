"""Keep-latest slot, pipeline stage, rolling statistics (no ROS)."""
from __future__ import annotations

import math
import threading
import time

from segpp_ros.ros.realtime import Counters, LatestSlot, RateMeter, SlotWorker, Window


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.overwritten == 4
    assert slot.take(timeout=0) == 4
    assert slot.take(timeout=0.01) is None            # empty: times out
    slot.close()
    assert slot.take() is None                       # closed: returns at once


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
