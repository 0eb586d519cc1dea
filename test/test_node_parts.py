"""Parts of the node that need rclpy but no DDS: logging and the parameter snapshot."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from segpp_ros.ros.params import Snapshot, defaults


def _loggable(name: str) -> SimpleNamespace:
    """What SegppNode.log_throttled reads of its node."""
    import rclpy.logging

    logger = rclpy.logging.get_logger(name)
    return SimpleNamespace(_last_log={}, _log_lock=threading.Lock(), get_logger=lambda: logger)


def test_one_logging_helper_takes_warnings_and_errors_in_any_order() -> None:
    """rclpy refuses a second severity from one call site (ValueError: Logger severity cannot be
    changed between calls): a warning then an error through the helper used to kill the
    inference thread, an error then a warning to end rclpy.spin with a traceback."""
    from segpp_ros.ros.node import SegppNode

    node = _loggable("segpp_test_logging")
    SegppNode.log_throttled(node, "silent", "no image on /camera/image for 5 s")
    SegppNode.log_throttled(node, "errors", "frame failed: RuntimeError: boom", error=True)
    SegppNode.log_throttled(node, "qos", "incompatible QoS with a peer")
    SegppNode.log_throttled(node, "errors2", "frame failed again", error=True)


def test_logging_is_throttled_per_kind(monkeypatch) -> None:
    from segpp_ros.ros import node as node_module

    lines: list[str] = []
    node = SimpleNamespace(_last_log={}, _log_lock=threading.Lock(),
                           get_logger=lambda: SimpleNamespace(warning=lines.append, error=lines.append))
    clock = iter([0.0, 1.0, 6.0, 6.5])
    monkeypatch.setattr(node_module.time, "monotonic", lambda: next(clock))
    for text in ("a1", "a2", "a3"):
        node_module.SegppNode.log_throttled(node, "a", text)
    node_module.SegppNode.log_throttled(node, "b", "b1")
    assert lines == ["a1", "a3", "b1"]


def test_a_logger_that_raises_does_not_escape() -> None:
    from segpp_ros.ros.node import SegppNode

    def broken(text: str) -> None:
        raise ValueError("Logger severity cannot be changed between calls.")
    node = SimpleNamespace(_last_log={}, _log_lock=threading.Lock(),
                           get_logger=lambda: SimpleNamespace(warning=broken, error=broken))
    SegppNode.log_throttled(node, "x", "text", error=True)


def test_snapshot_is_read_only_and_replaced_whole() -> None:
    first = Snapshot.of(defaults())
    with pytest.raises(TypeError):
        first.params["merge.preset"] = "fast"  # type: ignore[index]
    second = first.changed({"merge.preset": "fast", "max_side": 512})
    assert (first["merge.preset"], first["max_side"]) == ("none", 1024)      # the old view is untouched
    assert (second["merge.preset"], second["max_side"], second.merge.name) == ("fast", 512, "fast")
    assert second.pose_merge is first.pose_merge                           # unchanged: the same object
    assert second.changed({"max_side": 256}).merge is second.merge         # a worker sees no merge change
    with pytest.raises(ValueError):
        Snapshot.of({**defaults(), "merge.preset": "custom",
                     "merge.custom": "{stages: [{q: {mode: bsm, ratio: 0.5, cell: [0, 2]}}, {}, {}, {}]}"})
