"""The node's QoS, as perception nodes in the field set it (REP-2003, Isaac ROS), and its overrides.

    inputs (image, camera_info, detections)   best effort, keep last 1: matches reliable and
                                              best-effort publishers alike, never queues a stale frame
    outputs (label, color, keypoints, ...)    reliable, keep last 1: a default-QoS subscriber
                                              (reliable, depth 10) and a sensor-data one
                                              (best effort) are both served
    latched (label_info, keypoint_info, ...)  reliable, transient local, depth 1

Every input and output takes ROS's standard override parameters (rclpy's QoSOverridingOptions),
``qos_overrides.<topic>.<publisher|subscription>.<reliability|depth>``, set at start (a params
file or ``-p``), e.g. ``qos_overrides./segpp/label.publisher.reliability: best_effort``.
"""
from __future__ import annotations

from typing import Any, Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

# what the override parameters may change: reliability and depth (history stays keep-last)
OVERRIDABLE = (QoSPolicyKind.RELIABILITY, QoSPolicyKind.DEPTH)
# rclpy's policy kind ids (QoSPolicyKind values) -> the name a user sets
POLICY_NAMES = {kind.value: kind.name.lower() for kind in QoSPolicyKind}


def input_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def overrides() -> QoSOverridingOptions:
    """The override parameters of one publisher or subscription (a new object each: rclpy keeps it)."""
    return QoSOverridingOptions(policy_kinds=OVERRIDABLE)


def describe(qos: QoSProfile) -> str:
    """'reliable, keep_last 1, volatile' for the node's start-up log."""
    return f"{qos.reliability.name.lower()}, {qos.history.name.lower()} {qos.depth}, {qos.durability.name.lower()}"


def incompatible_text(topic: str, side: str, qos: QoSProfile, event: Any) -> str:
    """The warning of an incompatible-QoS event on our ``side`` ('publisher' or 'subscription')
    of ``topic``: who the peer is, which policy, and the fix."""
    policy = POLICY_NAMES.get(int(getattr(event.last_policy_kind, "value", event.last_policy_kind)), "a policy")
    ours = describe(qos)
    if side == "publisher":
        return (f"a subscriber of {topic} requests a QoS this node's publisher does not offer ({policy}; the "
                f"publisher offers {ours}): make the subscriber's QoS compatible, or set "
                f"qos_overrides.{topic}.publisher.{policy} at start")
    return (f"the publisher of {topic} offers a QoS this node's subscription cannot accept ({policy}; the "
            f"subscription requests {ours}): make the publisher's QoS compatible, or set "
            f"qos_overrides.{topic}.subscription.{policy} at start")


Handler = Callable[[str, str, QoSProfile, Any], None]
