"""The segpp node as a managed (lifecycle) node: the same behaviour, step by step on request.

    ros2 launch segpp segpp.launch.py lifecycle:=true [autostart:=true]
    ros2 lifecycle set /segpp configure    load and warm up the models; a failure leaves the node
                                           unconfigured with the reason logged (and on /diagnostics)
    ros2 lifecycle set /segpp activate     subscribe and publish
    ros2 lifecycle set /segpp deactivate   stop publishing at once (a frame in progress publishes
                                           nothing) and drop the input
    ros2 lifecycle set /segpp cleanup      free the models (and the CUDA cache)
    ros2 lifecycle set /segpp shutdown     from any state; the process then exits with code 0

The parameters are those of the plain node with the same descriptors, except that the ones that
need a reload (weights, device, ...) are not read-only here: they may change while the node is
unconfigured and take effect at the next configure; in any other state they are refused with the
reason. /diagnostics reports the state while not active.
"""
from __future__ import annotations

import threading
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.task import Future

from ..inference.pipeline import PipelineHooks
from .health import OK, WARN, Verdict
from .node import NODE_NAME, SegppBehaviour, StartupError


class SegppLifecycleNode(SegppBehaviour, LifecycleNode):
    READ_ONLY_DESCRIPTORS = False

    def __init__(self, stop: threading.Event | None = None, autostart: bool = False,
                 hooks: PipelineHooks | None = None, **kwargs: Any) -> None:
        """autostart: configure and activate right away (a configure failure leaves it unconfigured)."""
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._declare(stop, hooks)
        self.finalized = Future()  # done once shut down: the process then ends
        self._configure_error: str | None = None
        self.get_logger().info("managed node: unconfigured (ros2 lifecycle set "
                               f"{self.get_fully_qualified_name()} configure)")
        if autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _reload_allowed(self) -> bool:
        return self.segmenter is None

    def _idle_verdict(self) -> Verdict | None:
        name = self.get_fully_qualified_name()
        if self._active.is_set():
            return None
        if self.segmenter is None:
            if self._configure_error:
                return Verdict(WARN, f"unconfigured: configure failed: {self._configure_error}")
            return Verdict(OK, f"unconfigured: ros2 lifecycle set {name} configure")
        return Verdict(OK, f"inactive (models loaded, not publishing): ros2 lifecycle set {name} activate")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except StartupError as err:
            self._configure_error = str(err)
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self._configure_error = None
        self.get_logger().info(f"configured: {self.segmenter.describe()} on {self.segmenter.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated: not publishing, input dropped")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("cleaned up: models freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.finalized.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # a transition raised: drop what it left and go back to unconfigured
        self.get_logger().error(f"a transition from '{state.label}' failed; cleaning up to unconfigured")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self._active.is_set():
            self._deactivate()
        if self.segmenter is not None:
            self._cleanup()
