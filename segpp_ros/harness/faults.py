"""Fault injection for the node's own tests: off unless SEGPP_FAULT_INJECTION=1 is in its environment.

The node's process (segpp_ros.cli.node) then hands FaultHooks to the node: the one seam through
which faults reach it (segpp_ros.inference.pipeline.PipelineHooks), with no fault code in the
node itself. A frame whose header.frame_id starts with ``segpp-fault:`` makes the node misbehave
on purpose, so tests can prove what it does then:

    segpp-fault:raise       the frame fails with an exception (the error path: counted, logged)
    segpp-fault:kill        the thread ends (a BaseException escapes the worker loop)
    segpp-fault:stall=S     the thread stays S seconds on the frame (a stuck stage)
    segpp-fault:slow=F      segmentation and keypoints each take F times as long on this frame
                            (a machine slowed down by other work: the latency budget sees it)
    segpp-fault:pose        the pose stage fails on this frame (labels are still published)
    segpp-fault:publish     every publish of this frame's outputs is refused by rclpy

Nothing a sender puts in a message can turn this on; launch files never set the variable.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

from ..inference.pipeline import KEYPOINTS, PipelineHooks

ENV = "SEGPP_FAULT_INJECTION"
PREFIX = "segpp-fault:"


class InjectedFault(RuntimeError):
    """The failure a ``segpp-fault:raise`` frame causes."""


class InjectedDeath(BaseException):
    """Ends the worker thread (a BaseException, so no ``except Exception`` catches it)."""


class Unpublishable:
    """Not a ROS message: rclpy's publish() refuses it with a TypeError, as it refuses any sample
    it cannot serialise."""


class FaultHooks(PipelineHooks):
    """Misbehaves as a frame's ``segpp-fault:`` frame_id asks (see the module docstring)."""

    def frame(self, frame_id: str) -> None:
        if not frame_id.startswith(PREFIX):
            return
        action = frame_id[len(PREFIX):]
        if action == "raise":
            raise InjectedFault("injected failure (segpp-fault:raise)")
        if action == "kill":
            raise InjectedDeath("injected thread death (segpp-fault:kill)")
        if action.startswith("stall="):
            time.sleep(float(action.split("=", 1)[1]))

    def stage_start(self, stage: str, frame_id: str) -> None:
        if stage == KEYPOINTS and frame_id == PREFIX + "pose":
            raise InjectedFault("injected pose failure (segpp-fault:pose)")

    def stage_end(self, stage: str, frame_id: str, elapsed_s: float) -> None:
        """For a ``segpp-fault:slow=F`` frame, sleeps so that the stage takes F times as long. A
        factor, like other work sharing the CPU or GPU, which slows every merge setting in
        proportion (anything after F that is not part of a number, e.g. a test's ``#n`` request
        tag, is ignored)."""
        match = re.match(re.escape(PREFIX) + r"slow=([0-9.]+)", frame_id)
        if match:
            time.sleep(max(float(match.group(1)) - 1.0, 0.0) * elapsed_s)

    def outgoing(self, message: Any) -> Any:
        """``message``, or for the outputs of a ``segpp-fault:publish`` frame something rclpy refuses."""
        header = getattr(message, "header", None)
        if header is None and getattr(message, "markers", None):
            header = message.markers[0].header
        if header is not None and header.frame_id == PREFIX + "publish":
            return Unpublishable()
        return message


def hooks_from_environment() -> PipelineHooks | None:
    """FaultHooks when SEGPP_FAULT_INJECTION=1, else None (nothing injected)."""
    return FaultHooks() if os.environ.get(ENV) == "1" else None
