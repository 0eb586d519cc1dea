"""The segpp node's process: rclpy up, the plain or the managed node, spin, shut down, exit code.

node.py holds what the node does and lifecycle.py its managed form; this module, above both,
picks one, so neither imports the other's user.
"""
from __future__ import annotations

import os
import sys

from .env import ensure_ament_prefix, limit_decoder_pixels

ensure_ament_prefix()
limit_decoder_pixels()  # before anything imports OpenCV

import rclpy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from ..inference.pipeline import PipelineHooks  # noqa: E402
from ..model.runtime import keep_freed_memory  # noqa: E402
from .lifecycle import SegppLifecycleNode  # noqa: E402
from .node import NODE_NAME, SHUTDOWN_TIMEOUT_S, SegppNode, StartupError  # noqa: E402
from .spin import StopSignals, spin_until_stopped  # noqa: E402

# exit code of a node that refuses to start (sysexits' EX_CONFIG): the launch file does not respawn
# it, since a restart cannot fix a parameter or a weights file; any other failure is respawned
EXIT_REFUSED = 78


def run(args: list[str], signals: StopSignals, lifecycle: bool = False, autostart: bool = False,
        hooks: PipelineHooks | None = None) -> int:
    """The node process: init rclpy, spin until ``signals`` asks for a stop, shut down within
    SHUTDOWN_TIMEOUT_S. Exit codes: 0 after a stop request, EXIT_REFUSED (78) when the node refuses
    to start (the reason is its one fatal log line).

    ``signals`` must be installed before anything slow (imports, loading): SIGINT/SIGTERM, once or
    repeatedly, at any moment then only ask for a stop: no KeyboardInterrupt in a thread join, no
    traceback, exit code 0 (segpp_ros.cli.node installs them first thing). ``lifecycle``: run the
    managed node (segpp_ros.ros.lifecycle), which ends when it is shut down (finalized), and
    configures and activates itself at start with ``autostart``. ``hooks``: what the frames meet
    on their way (segpp_ros.harness.faults for the node's own tests; nothing by default)."""
    keep_freed_memory()  # before DDS and the inference worker start their threads (see its docstring)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    finished = True
    try:
        if lifecycle:
            node = SegppLifecycleNode(stop=signals.event, autostart=autostart, hooks=hooks)
            spin_until_stopped(node, node.finalized, signals.event)
        else:
            node = SegppNode(stop=signals.event, hooks=hooks)
            spin_until_stopped(node, None, signals.event)
    except StartupError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(err))
        code = EXIT_REFUSED
    finally:
        if node is not None:
            finished = node.close()
            node.destroy_node()
        rclpy.try_shutdown()
        signals.finish()
    if not finished:
        # a worker is still inside a forward pass past the shutdown deadline: leave without
        # waiting for it (interpreter teardown under a running native thread can crash)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

