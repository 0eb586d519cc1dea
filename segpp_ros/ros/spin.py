"""Spinning a node until it is done or SIGINT/SIGTERM arrives, without tracebacks.

rclpy's own signal handler shuts the context down under a spinning executor, which then fails
in its next wait (RCLError) instead of returning, and Python's default SIGINT handler raises
KeyboardInterrupt wherever the main thread is, e.g. in a thread join during shutdown. So the
project's processes init rclpy with SignalHandlerOptions.NO and use StopSignals: every SIGINT
and SIGTERM, once or many times (a terminal's Ctrl-C reaches a launched node twice: from the
terminal and from launch), only sets an event; the spin loop sees it between short waits and
the caller shuts down with the context intact.
"""
from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """While installed, SIGINT and SIGTERM only set ``event``; ``restore()`` puts the previous
    handlers back (call it when shutdown is over, not before)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._stop)
        return self

    def _stop(self, signum: int, frame: object) -> None:
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def finish(self) -> None:
        """Shutdown is done: ignore further SIGINT/SIGTERM. At exit Python puts the default
        disposition back for the handlers it installed, and a late Ctrl-C (a terminal sends it to
        launch and node alike) would then kill the exiting process (exit code -2 instead of 0);
        an ignored signal stays ignored."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def spin_until_stopped(node: Any, done: Any, stop: threading.Event, poll_s: float = 0.1) -> bool:
    """Spin ``node`` until the future ``done`` completes (None: never) or ``stop`` is set; True if
    ``stop`` ended it."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop.is_set() and (done is None or not done.done()) and node.context.ok():
            executor.spin_once(timeout_sec=poll_s)
    finally:
        executor.remove_node(node)
        executor.shutdown()
    return stop.is_set()
