"""The managed node driven through its lifecycle services (lifecycle_msgs ChangeState / GetState),
as a lifecycle manager (nav2's, or any launch system) drives it. No `ros2` command is involved, so
this runs on every distro the node supports, Jazzy included, where rclpy.lifecycle is another
release (7.x) than Kilted's (9.x); test_lifecycle.py drives the same node with `ros2 lifecycle`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from segpp_ros.training.data.scenes import render_scene

from segpp_ros.harness.graph import node_executable

from .rosgraph import NodeProcess, Probe, make_frame, require_isolated_network, wait_for

pytestmark = pytest.mark.ros_node

NAME = "segpp_managed"
TOPIC = "/managed_cam/image"
PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.5,
          "pose.enable": False}
SCENE = render_scene(10_000_431, 96, 128).image


def call(probe: Probe, client, request):
    future = client.call_async(request)
    wait_for(future.done, 60, f"the response of {client.srv_name}")
    return future.result()


def test_the_node_runs_on_this_venvs_rclpy():
    """make test's Jazzy run tests Jazzy's rclpy: the node executable is this venv's build."""
    shebang = node_executable().read_text().splitlines()[0]
    assert Path(shebang.removeprefix("#!")).parent == Path(sys.prefix) / "bin", shebang


def test_every_transition_through_the_lifecycle_services(tmp_path):
    require_isolated_network()
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path, PARAMS, {"image": TOPIC}, name=NAME, args=("--lifecycle",))
    probe = Probe(f"{NAME}_probe")
    try:
        change = probe.node.create_client(ChangeState, f"/{NAME}/change_state")
        get = probe.node.create_client(GetState, f"/{NAME}/get_state")
        wait_for(lambda: change.service_is_ready() and get.service_is_ready(), 120, "the lifecycle services", node)
        probe.subscribe(Image, f"/{NAME}/label", 10)
        camera = probe.node.create_publisher(Image, TOPIC, 10)

        def state() -> int:
            return call(probe, get, GetState.Request()).current_state.id

        def transition(transition_id: int) -> bool:
            return call(probe, change, ChangeState.Request(transition=Transition(id=transition_id))).success

        def unanswered() -> str:
            # which side lost the other: the camera's matched readers, the node's own account
            return (f"the camera publisher matches {camera.get_subscription_count()} subscription(s), the label "
                    f"subscriber {probe.node.count_publishers(f'/{NAME}/label')} publisher(s); node log:\n"
                    f"{node.output()[-3000:]}")

        def labelled(frame_id: str, timeout: float) -> bool:
            """Send a frame every 0.25 s until its label arrives (True) or ``timeout`` passes."""
            msg = make_frame(probe, SCENE)
            msg.header.frame_id = frame_id
            try:
                wait_for(lambda: any(m.header.frame_id == frame_id for m in probe.messages(f"/{NAME}/label")),
                         timeout, f"the label of {frame_id}", every=lambda: camera.publish(msg))
            except pytest.fail.Exception:
                return False
            return True

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
        assert not labelled("while_inactive", 3.0)                     # configured, not publishing
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
        assert labelled("while_active", 60.0), unanswered()
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
        assert not labelled("after_deactivate", 3.0)
        assert transition(Transition.TRANSITION_CLEANUP) and state() == State.PRIMARY_STATE_UNCONFIGURED
        # configure again after cleanup: the models load anew and frames flow again
        assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
        assert labelled("after_reconfigure", 60.0), unanswered()
        assert transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert node.proc.wait(30) == 0, node.output()[-3000:]          # shut down: the process ends
    finally:
        probe.close()
        node.stop()
    out = node.output()
    assert "Traceback" not in out and "configured: SegFormer++" in out and "cleaned up: models freed" in out, out
