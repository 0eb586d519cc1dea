"""Drive a segpp graph from Python: the node as its own process, started the way launch_ros
starts it, and a probe node spinning in a background thread that publishes and collects.

Used by the multi-process tests and the ROS benchmark. Start DDS only inside a
private network namespace (tools/netns-run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..ros.env import ensure_ament_prefix, share_file


def node_executable() -> Path:
    """lib/segpp/segpp_node of the installed package: what `ros2 run` and launch_ros execute."""
    ensure_ament_prefix()
    from ament_index_python.packages import get_package_prefix
    return Path(get_package_prefix("segpp")) / "lib" / "segpp" / "segpp_node"


def write_params_file(path: Path, params: dict[str, Any]) -> Path:
    """A ROS 2 params file that applies ``params`` to any node (``/**``), as a user writes one."""
    lines = ["/**:", "  ros__parameters:"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in params.items()]  # JSON scalars and lists are YAML
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """The segpp node started like launch_ros does: executable, --ros-args, params files, remaps."""

    def __init__(self, log_dir: Path, params: dict[str, Any], remaps: dict[str, str], name: str = "segpp",
                 params_file: Path | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        """``args``: the executable's own arguments (``--lifecycle``), before --ros-args. The node
        runs PyTorch unless ``params`` name a backend: its tests and tools compare it with the
        in-process PyTorch core, bit for bit; a compiled model agrees only to float rounding."""
        overrides = write_params_file(log_dir / f"{name}_overrides.yaml", {"backend": "torch", **params})
        self.cmd = [str(node_executable()), *args, "--ros-args", "-r", f"__node:={name}",
                    "--params-file", str(params_file or share_file("config", "segpp.yaml")), "--params-file", str(overrides)]
        for src, dst in remaps.items():
            self.cmd += ["-r", f"{src}:={dst}"]
        self.log = log_dir / f"{name}.log"
        self._log_file = open(self.log, "w")
        # stdin closed: the node never reads it; the default SIGINT disposition, whatever the
        # parent's (a background job of a non-interactive shell ignores it)
        self.proc = subprocess.Popen(self.cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the node process now (MB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.proc.pid}")

    def threads(self) -> int:
        """Threads of the node process now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError(f"no Threads for pid {self.proc.pid}")

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(2)  # SIGINT, as launch does on shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


class ProcessGroup:
    """A command in a process group of its own, as a terminal runs it: ``interrupt()`` is Ctrl-C
    (SIGINT to every process of the group, e.g. ros2 launch and the node it started), ``close()``
    ends whatever is left of the group (SIGKILL) so nothing outlives a test that failed. Output
    (stdout and stderr) goes to a log file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.cmd = cmd
        self.log = log
        self._log_file = open(log, "w")
        # the default SIGINT disposition in the child, whatever the parent's: a background job of a
        # non-interactive shell ignores SIGINT, and launch would then ignore Ctrl-C
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        """Ctrl-C in the terminal: SIGINT to the whole group."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> int | None:
        """Kill what is left of the group; the leader's exit code."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.wait(10)
        self._log_file.close()
        return code


class Probe:
    """A test-side rclpy node spinning in a background thread; collects messages per topic."""

    def __init__(self, name: str = "probe") -> None:
        ensure_ament_prefix()
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[tuple[float, Any]]] = {}
        self._subscriptions: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._closing = False
        self.error: BaseException | None = None   # what ended the spin thread, raised to the caller
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as err:  # noqa: BLE001 -- a callback or the executor failed: the caller hears of it
            if not self._closing:
                self.error = err

    def _check(self) -> None:
        """Raise what ended the spin thread (a failing callback would otherwise look like silence)."""
        if self.error is not None:
            raise RuntimeError(f"the probe's spin thread failed: {type(self.error).__name__}: {self.error}") \
                from self.error

    def subscribe(self, msg_type: Any, topic: str, qos: Any = None,
                  callback: Callable[[float, Any], None] | None = None) -> None:
        """Collect the messages of ``topic``, or hand each to ``callback(arrival, msg)`` instead
        (arrival: wall-clock seconds, which is ROS time here)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.received.setdefault(topic, [])

        def store(msg: Any) -> None:
            if callback is not None:
                callback(time.time(), msg)
                return
            with self._lock:
                self.received[topic].append((time.time(), msg))
        self._subscriptions.setdefault(topic, []).append(self.node.create_subscription(msg_type, topic, store, qos))

    def unsubscribe(self, topic: str) -> None:
        """Destroy this probe's subscriptions of ``topic`` (its messages so far are kept)."""
        for subscription in self._subscriptions.pop(topic, []):
            self.node.destroy_subscription(subscription)

    def messages(self, topic: str) -> list[Any]:
        self._check()
        with self._lock:
            return [m for _, m in self.received.get(topic, [])]

    def timed_messages(self, topic: str) -> list[tuple[float, Any]]:
        """(arrival wall-clock seconds, message) pairs."""
        self._check()
        with self._lock:
            return list(self.received.get(topic, []))

    def publisher(self, msg_type: Any, topic: str, reliable: bool = False) -> Any:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        return self.node.create_publisher(msg_type, topic, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT))

    def now_msg(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        import rclpy
        self._closing = True
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5)


def diagnostics_status(probe: Probe, node_name: str = "/segpp",
                       part: str = "segmentation") -> tuple[int, str, dict[str, str]] | None:
    """(level, message, key/values) of the node's latest status on /diagnostics (None before the
    first one); level 0 OK, 1 WARN, 2 ERROR. ``part``: the model's status ('segmentation') or
    a named camera's ('camera front')."""
    for msg in reversed(probe.messages("/diagnostics")):
        for status in msg.status:
            if status.name == f"{node_name}: {part}":
                # DiagnosticStatus.level is a ROS byte: bytes of length 1 in rclpy
                level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
                return level, status.message, {kv.key: kv.value for kv in status.values}
    return None


def diagnostics_values(probe: Probe, node_name: str = "/segpp") -> dict[str, str] | None:
    """Key/values of the node's latest status on /diagnostics (None before the first one)."""
    status = diagnostics_status(probe, node_name)
    return None if status is None else status[2]


def end_run(node: NodeProcess, probe: Probe, camera: Any, what: str) -> str:
    """The end of a tool's run against the node: the camera thread (if started) and the probe
    stopped, the node shut down; its log, or RuntimeError (with the log's tail) when it did not
    exit cleanly. ``what`` names the run in that error ("at the end of the soak")."""
    if camera is not None:
        camera.stop.set()
        camera.join(5)
    probe.close()
    code = node.stop()
    log = node.output()
    if code != 0:
        raise RuntimeError(f"the node exited with code {code} {what}:\n{log[-3000:]}")
    return log


def set_parameters(probe: Probe, node_name: str, values: dict[str, Any], timeout: float = 30.0) -> list[Any]:
    """Set parameters of ``node_name`` through its SetParameters service (what `ros2 param set`
    calls); the SetParametersResult of each, or RuntimeError when the service does not answer."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe.node, node_name)
    if not client.wait_for_services(timeout_sec=timeout):
        raise RuntimeError(f"the parameter services of /{node_name} did not appear within {timeout:g} s")
    future = client.set_parameters([Parameter(name, value=value) for name, value in values.items()])
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"/{node_name} did not answer SetParameters within {timeout:g} s")
        time.sleep(0.01)
    return list(future.result().results)
