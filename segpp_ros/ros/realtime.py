"""Real-time plumbing with no ROS in it: keep-latest frame slots, side inputs by stamp, rolling statistics."""
from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Generic, Hashable, TypeVar

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


class LatestPerKey(Generic[T]):
    """One keep-latest slot per key (per camera): a newer item of a key replaces that key's
    waiting one (counted per key as overwritten); ``take`` returns every waiting item, oldest
    first, at most ``max_items`` of them (the rest stay for the next take).

    With ``window_s`` > 0 a take that finds some keys waiting also waits, until at most
    ``window_s`` after the oldest waiting item arrived, for the keys whose next item is due by
    then (from each key's last arrival and its median interval), so cameras running at the
    same rate are taken together and can share one forward pass. A key that is slower than
    that, or overdue by more than one interval (a stopped camera), is not waited for: a slow or
    dead camera delays no other.
    """

    def __init__(self, window_s: float = 0.0, max_items: int = 8) -> None:
        self.window_s = window_s
        self.max_items = max_items
        self._items: dict[Hashable, tuple[float, T]] = {}
        self._last: dict[Hashable, float] = {}
        self._intervals: dict[Hashable, deque[float]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.overwritten_by: Counter = Counter()

    @property
    def overwritten(self) -> int:
        return sum(self.overwritten_by.values())

    def put(self, item: T, key: Hashable = "") -> None:
        now = time.monotonic()
        with self._cond:
            if key in self._items:
                self.overwritten_by[key] += 1
            if key in self._last:
                self._intervals.setdefault(key, deque(maxlen=9)).append(now - self._last[key])
            self._last[key] = now
            self._items[key] = (now, item)
            self._cond.notify()

    def _wait_until(self, deadline: float, now: float) -> float | None:
        """When to look again for keys whose next item is due by ``deadline`` (expected from
        their last arrival and median interval, and not overdue by more than an interval), or
        None when every such key has an item waiting."""
        until = None
        for key, last in self._last.items():
            if key in self._items or key not in self._intervals:
                continue
            interval = statistics.median(self._intervals[key])
            given_up = last + 2 * interval
            if last + interval <= deadline and now <= given_up:
                until = min(deadline, given_up) if until is None else min(until, given_up)
        return until

    def take(self, timeout: float | None = None) -> list[T] | None:
        """The waiting items (removed), oldest first; None after ``timeout`` with nothing
        waiting, or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._closed or not self._items:
                return None
            if self.window_s > 0:
                deadline = min(arrived for arrived, _ in self._items.values()) + self.window_s
                while not self._closed and len(self._items) < self.max_items:
                    now = time.monotonic()
                    until = self._wait_until(deadline, now) if now < deadline else None
                    if until is None:
                        break
                    self._cond.wait(max(until - now, 0.0) + 1e-4)
            waiting = sorted(self._items.items(), key=lambda kv: kv[1][0])[:max(self.max_items, 1)]
            for key, _ in waiting:
                del self._items[key]
            return [item for _, (_, item) in waiting]

    def clear(self) -> None:
        """Drop every waiting item."""
        with self._cond:
            self._items.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class SlotWorker(Generic[T]):
    """One thread working on the newest item of its LatestSlot: a pipeline stage that never
    queues. ``handle`` runs on that thread; an exception goes to ``on_error`` and the stage
    goes on with the next item. An exception raised by ``on_error`` itself is counted
    (``handler_failures``) and written to stderr: nothing an item or its error handler raises
    ends the loop.

    What can still end the thread is a BaseException that is not an Exception (SystemExit from
    a library calling sys.exit, the fault injection of the tests): it is recorded in ``death``
    and ``alive`` turns false; the owner's watchdog reports it and calls ``restart()``.
    ``busy_since`` (monotonic start of the item being handled, None while idle) tells a stuck
    stage from an idle one; ``last_progress`` is when the loop last finished an item or woke
    up idle.
    """

    def __init__(self, name: str, handle: Callable[[T], None], on_error: Callable[[Exception], None],
                 slot: LatestSlot | LatestPerKey | None = None) -> None:
        """slot: where items wait (a LatestSlot by default; with a LatestPerKey, ``handle``
        gets the list of items each take returns)."""
        self.name = name
        self.slot: LatestSlot | LatestPerKey = slot if slot is not None else LatestSlot()
        self._handle, self._on_error = handle, on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.handler_failures = 0
        self.death: str | None = None
        self.busy_since: float | None = None
        self.last_progress = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def restart(self) -> bool:
        """Start a new thread when the last one died (not when stopped); True if it did."""
        if self.alive or self._stop.is_set() or self._thread is None:
            return False
        self.restarts += 1
        self.busy_since = None
        self.start()
        return True

    def put(self, item: T) -> None:
        self.slot.put(item)

    def stop(self) -> None:
        """Ask the thread to end after its current item; returns at once."""
        self._stop.set()
        self.slot.close()

    def join(self, deadline: float) -> bool:
        """Wait for the thread until the monotonic ``deadline``; True when it has ended."""
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self.alive

    def close(self, timeout: float = 3.0) -> bool:
        self.stop()
        return self.join(time.monotonic() + timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self.slot.take(timeout=0.2)
                self.last_progress = time.monotonic()
                if item is None:
                    continue
                self.busy_since = self.last_progress
                try:
                    self._handle(item)
                except Exception as err:  # noqa: BLE001 -- a stage must outlive any one item
                    self._report(err)
                finally:
                    self.busy_since = None
                    self.last_progress = time.monotonic()
        except BaseException as err:  # noqa: BLE001 -- record why the stage ended; the watchdog restarts it
            self.death = f"{type(err).__name__}: {err}"

    def _report(self, err: Exception) -> None:
        try:
            self._on_error(err)
        except Exception as failure:  # noqa: BLE001 -- a broken error handler must not end the stage
            self.handler_failures += 1
            try:
                print(f"{self.name}: the error handler failed ({type(failure).__name__}: {failure}) while "
                      f"reporting {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            except Exception:  # noqa: BLE001 -- stderr closed: nothing left to tell
                pass


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

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._prune(now)
            self.total += 1
            self.last = now

    def count(self, now: float | None = None) -> int:
        """Events in the window ending at ``now``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            return len(self._times)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            if len(self._times) < 2:
                return 0.0
            return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


class EventLog:
    """Events of named kinds over a sliding time window, with the latest text and value of each
    kind: what the watchdog reads to say which problem dominates and what it looked like."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._events: deque[tuple[float, str, float]] = deque()
        self._window = window_s
        self._lock = threading.Lock()
        self.latest: dict[str, str] = {}

    def add(self, kind: str, text: str = "", value: float = 0.0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._events.append((now, kind, value))
            self._prune(now)
            if text:
                self.latest[kind] = text

    def _prune(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self._window:
            self._events.popleft()

    def counts(self, now: float | None = None) -> Counter:
        """Events per kind in the window ending at ``now``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            return Counter(kind for _, kind, _ in self._events)

    def largest(self, now: float | None = None) -> float:
        """The largest value of the events in the window (0 when empty)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            return max((v for _, _, v in self._events), default=0.0)


class Counters(Counter):
    """Named event counters (drops, bad inputs by kind, publish errors), thread-safe increments."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self[key] += n


class ByStamp(Generic[T]):
    """The last ``keep`` messages of a side input (camera_info, detections), by header stamp (ns):
    filled on the executor, read by the worker threads, which pair them with a frame's stamp."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self.received = 0
        self._items: OrderedDict[int, T] = OrderedDict()
        self._cond = threading.Condition()
        self._paired = False         # the last match was exact
        self._closest_paired = False  # the last closest() found one

    def put(self, stamp: int, item: T) -> None:
        with self._cond:
            self.received += 1
            self._items.pop(stamp, None)
            self._items[stamp] = item
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
            self._cond.notify_all()

    def match(self, stamp: int, late_s: float = 0.0) -> tuple[T | None, bool]:
        """(item, paired): the one stamped ``stamp`` (paired True), else the latest (paired
        False), or None before any arrived. While the last match was exact, the one stamped
        ``stamp`` is awaited up to ``late_s``: a driver publishes image and camera_info together,
        but they travel on two topics and either may arrive first. A source that stamps apart
        (no exact match last time) is never waited for."""
        with self._cond:
            if stamp not in self._items and self._paired and late_s > 0:
                deadline = time.monotonic() + late_s
                while stamp not in self._items and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            self._paired = stamp in self._items
            if self._paired:
                return self._items[stamp], True
            return (next(reversed(self._items.values())), False) if self._items else (None, False)

    def closest(self, stamp: int, tolerance_ns: int, late_s: float = 0.0) -> T | None:
        """The item stamped nearest ``stamp``, if within ``tolerance_ns``; else None. An item not
        there yet is awaited up to ``late_s`` (only while the last such call paired one)."""
        def nearest() -> T | None:
            best = min(self._items, key=lambda t: abs(t - stamp), default=None)
            return self._items[best] if best is not None and abs(best - stamp) <= tolerance_ns else None
        with self._cond:
            found = nearest()
            if found is None and self._closest_paired and late_s > 0:
                deadline = time.monotonic() + late_s
                while found is None and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                    found = nearest()
            self._closest_paired = found is not None
            return found

    def wait(self, stamp: int, timeout_s: float) -> T | None:
        """The item stamped ``stamp``, waiting up to ``timeout_s`` for it to arrive; None after that."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while stamp not in self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._items[stamp]


def stamp_ns(header: Any) -> int:
    """A std_msgs Header's stamp in integer nanoseconds (the key of side inputs by stamp)."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
