"""Real-time plumbing with no ROS in it: a keep-latest frame slot and rolling statistics."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds one item: a newer put replaces the waiting one (counted as overwritten).

    The camera callback never waits for inference and inference never works on a frame that
    has a newer successor, so latency cannot grow when frames arrive faster than we process.
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.overwritten = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.overwritten += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item (and empty the slot), or None after timeout / when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class SlotWorker(Generic[T]):
    """One thread working on the newest item of its LatestSlot: a pipeline stage that never
    queues. ``handle`` runs on that thread; an exception goes to ``on_error`` and the stage
    goes on with the next item."""

    def __init__(self, name: str, handle: Callable[[T], None], on_error: Callable[[Exception], None]) -> None:
        self.slot: LatestSlot[T] = LatestSlot()
        self._handle, self._on_error = handle, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: T) -> None:
        self.slot.put(item)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.slot.take(timeout=0.2)
            if item is not None:
                try:
                    self._handle(item)
                except Exception as err:  # noqa: BLE001 -- a stage must outlive any one item
                    self._on_error(err)


class Window:
    """The last ``size`` samples of a quantity (ms) for medians and tails."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def percentile(self, q: float) -> float:
        """q-th percentile of the window; NaN when empty."""
        with self._lock:
            values = list(self._values)
        return float(np.percentile(values, q)) if values else float("nan")


class RateMeter:
    """Events per second over a sliding time window (monotonic clock)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._times: deque[float] = deque()
        self._window = window_s
        self._lock = threading.Lock()
        self.total = 0
        self.last: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.total += 1
            self.last = now

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self._window:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


class Counters(Counter):
    """Named event counters (drops, bad inputs by kind, publish errors), thread-safe increments."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self[key] += n
