"""The test driver itself (segpp_ros.harness.graph): a failure inside the probe shows up as that
failure, not as a timeout waiting for messages that will never come."""
from __future__ import annotations

import pytest

from .rosgraph import Probe, require_isolated_network, wait_for

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too


def test_a_failing_probe_callback_surfaces_as_an_error() -> None:
    require_isolated_network()
    from std_msgs.msg import String

    probe = Probe("segpp_graph_probe")
    try:
        probe.subscribe(String, "/segpp_graph_test", callback=lambda arrival, msg: 1 / 0)
        publisher = probe.publisher(String, "/segpp_graph_test", reliable=True)
        wait_for(lambda: probe.error is not None, 30, "the callback's failure",
                 every=lambda: publisher.publish(String(data="x")))
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            probe.messages("/segpp_graph_test")
    finally:
        probe.close()
