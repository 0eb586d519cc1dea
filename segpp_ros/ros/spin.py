"""Spinning the project's tool nodes (camera, sink) until they are done or a signal arrives."""
from __future__ import annotations

import threading
from typing import Any


def spin_until_stopped(node: Any, done: Any, poll_s: float = 0.1) -> bool:
    """Spin ``node`` until the future ``done`` completes or SIGINT/SIGTERM arrives; True if
    a signal stopped it.

    rclpy's own signal handler shuts the context down under a spinning executor, which then
    fails in its next wait (RCLError) instead of returning; so init rclpy with
    SignalHandlerOptions.NO and stop here, between short waits, with the context intact.
    """
    import signal

    from rclpy.executors import SingleThreadedExecutor

    stopped = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopped.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stopped.is_set() and not done.done():
            executor.spin_once(timeout_sec=poll_s)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stopped.is_set()
