"""The inference core's Python log records in the node's ROS log.

The core (no ROS) logs through Python's ``logging`` under ``segpp_ros``: a CUDA graph that could
not be captured, a model compiled by OpenVINO and how long it took. In the node those records go
to its rclpy logger (console, /rosout, the launch log) like its own lines, at their level.
"""
from __future__ import annotations

import logging
from typing import Any

CORE_LOGGER = "segpp_ros"


class RosLogHandler(logging.Handler):
    """A logging handler writing to an rclpy logger (info, warn, error by the record's level)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 -- logging must never take a frame down
            self.handleError(record)


def forward_core_logs(ros_logger: Any) -> None:
    """Send the core's records (INFO and up) to ``ros_logger`` instead of Python's stderr: one
    handler per process, the latest node's logger."""
    core = logging.getLogger(CORE_LOGGER)
    for handler in [h for h in core.handlers if isinstance(h, RosLogHandler)]:
        core.removeHandler(handler)
    core.addHandler(RosLogHandler(ros_logger))
    core.setLevel(logging.INFO)
    core.propagate = False
