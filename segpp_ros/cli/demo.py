"""segpp-demo: the ROS pipeline on this machine, end to end (what `make demo` runs).

Starts three processes and relays their output, each line prefixed with its name:

    node    ros2 launch segpp segpp.launch.py image:=/camera/image params_file:=OUT/demo_params.yaml
            (max_side 512, merge.preset none; where there is no ros2 command:
            python -m segpp_ros.cli.node --ros-args --params-file config/segpp.yaml -p ... -r ...)
    camera  python -m segpp_ros.cli.camera --topic /camera/image --rate 5 --frames 0
            (the bundled sample sequence, in a loop)
    sink    python -m segpp_ros.cli.sink --frames 24 --out out/demo
            (label / colour / overlay PNGs, latency and frame rate)

When the sink has its frames (or --timeout passes), the camera and the node are stopped and
the sink's summary is printed again; the exit code is the sink's. DDS must stay on this host,
so run it inside an isolated network namespace: `tools/netns-run segpp-demo` (make demo does).
For segmentation without ROS, see segpp-offline.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..ros.env import is_isolated_network, share_file
from ..harness.sink import SUMMARY_MARKER
from . import non_negative_int, positive_float

PROG = "segpp-demo"
STOP_GRACE_S = 10.0  # after SIGINT, a process gets this long before it is killed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=non_negative_int, default=24,
                   help="frames the sink waits for (default: 24); 0: until Ctrl-C or --timeout")
    p.add_argument("--rate", type=positive_float, default=5.0, help="camera frames per second (default: 5)")
    p.add_argument("--max-side", type=non_negative_int, default=512,
                   help="node parameter max_side: network input size, longer side (default: 512)")
    p.add_argument("--merge", default="none", help="node parameter merge.preset (default: none)")
    p.add_argument("--weights", help="node parameter weights (default: the embedded model)")
    p.add_argument("--device", help="node parameter device: auto, cpu, cuda, cuda:N (default: the params file's)")
    p.add_argument("--images", metavar="GLOB", help="camera images (default: the bundled sample sequence)")
    p.add_argument("--out", default="out/demo", help="folder for the sink's PNGs (default: out/demo)")
    p.add_argument("--timeout", type=positive_float, default=300.0,
                   help="give up after this many seconds (default: 300)")
    return p


def ros2_command() -> Path | None:
    """The ros2 command of this environment (make venv installs it where ../shared/ros2-tools is)."""
    path = Path(sys.prefix) / "bin" / "ros2"
    return path if path.exists() else None


def node_command(args: argparse.Namespace, params_file: Path, ros2: Path | None) -> list[str]:
    """The segpp node as users start it: ros2 launch with the demo's parameters in a params file of
    its own (written next to the PNGs), or, without ros2, the node executable with the shipped
    params file and -p overrides."""
    if ros2 is not None:
        demo_params = Path(args.out) / "demo_params.yaml"
        demo_params.parent.mkdir(parents=True, exist_ok=True)
        demo_params.write_text(f"/**:\n  ros__parameters:\n    max_side: {args.max_side}\n"
                               f"    merge.preset: {json.dumps(args.merge)}\n")
        cmd = [str(ros2), "launch", "segpp", "segpp.launch.py", "image:=/camera/image",
               f"params_file:={demo_params}", "respawn:=false"]
        return cmd + [f"{name}:={value}" for name, value in (("weights", args.weights), ("device", args.device))
                      if value]
    cmd = [sys.executable, "-m", "segpp_ros.cli.node", "--ros-args", "--params-file", str(params_file),
           "-p", f"max_side:={args.max_side}", "-p", f"merge.preset:={args.merge}"]
    if args.weights:
        cmd += ["-p", f"weights:={args.weights}"]
    if args.device:
        cmd += ["-p", f"device:={args.device}"]
    return cmd + ["-r", "image:=/camera/image"]


def camera_command(args: argparse.Namespace) -> list[str]:
    """An endless camera: the sink, not the camera, decides when the demo has enough frames."""
    cmd = [sys.executable, "-m", "segpp_ros.cli.camera", "--topic", "/camera/image",
           "--rate", f"{args.rate:g}", "--frames", "0"]
    return cmd + (["--images", args.images] if args.images else [])


def sink_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "segpp_ros.cli.sink", "--frames", str(args.frames), "--out", args.out]


class Child:
    """A subprocess whose stdout and stderr are relayed line by line as '[name] line'."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._relay = threading.Thread(target=self._pump, name=f"relay-{name}", daemon=True)
        self._relay.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            print(f"[{self.name}] {line}", end="", flush=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGINT (the nodes shut down cleanly and print their summaries), then kill."""
        if self.running():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                print(f"{PROG}: {self.name} did not stop within {grace_s:g} s of SIGINT; killing it",
                      file=sys.stderr, flush=True)
                self.proc.kill()
                self.proc.wait()
        self._relay.join(timeout=5)
        return self.proc.returncode

    def summary(self, marker: str) -> list[str]:
        """The lines from the last ``marker`` line on (empty if it never printed one)."""
        starts = [i for i, line in enumerate(self.lines) if line == marker]
        return self.lines[starts[-1]:] if starts else []


def child_env() -> dict[str, str]:
    # unbuffered: lines must reach the relay as they are printed, not at exit
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_for_sink(sink: Child, others: list[Child], timeout_s: float) -> str | None:
    """Wait until the sink exits; a reason string if something else ended the wait first."""
    deadline = time.monotonic() + timeout_s
    while sink.running():
        for child in others:
            if not child.running():
                return f"the {child.name} exited early with code {child.proc.returncode}"
        if time.monotonic() > deadline:
            return f"timed out after {timeout_s:g} s"
        time.sleep(0.2)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not is_isolated_network():
        print(f"{PROG}: this demo starts DDS, which must not reach other hosts: run it inside an isolated "
              f"network namespace via `tools/netns-run {PROG}` (`make demo` does)", file=sys.stderr)
        return 2
    params_file = share_file("config", "segpp.yaml")
    env = child_env()
    # a SIGTERM to the demo must still stop its children
    signal.signal(signal.SIGTERM, _raise_interrupt)
    children: list[Child] = []
    reason: str | None = "interrupted"
    try:
        node = Child("node", node_command(args, params_file, ros2_command()), env)
        children.append(node)
        sink = Child("sink", sink_command(args), env)
        children.append(sink)
        camera = Child("camera", camera_command(args), env)
        children.append(camera)
        reason = wait_for_sink(sink, [node, camera], args.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        # camera first, so the node does not log a missing input while it shuts down
        codes = {child.name: child.stop() for child in reversed(children)}
    return report(children, codes, reason, args)


def report(children: list[Child], codes: dict[str, int], reason: str | None, args: argparse.Namespace) -> int:
    """Print the sink's summary and the camera's rate; the demo's exit code."""
    by_name = {c.name: c for c in children}
    print(f"\n=== {PROG}: camera -> node -> sink ===")
    if "camera" in by_name:
        print("\n".join(line for line in by_name["camera"].lines if line.startswith("segpp-camera: published")))
    if "sink" in by_name:
        print("\n".join(by_name["sink"].summary(SUMMARY_MARKER)[1:]) or "(the sink printed no summary)")
    for name, code in codes.items():
        if code not in (0, None):
            # a node that needed SIGKILL, or failed, is worth knowing about even after a good run
            print(f"{PROG}: the {name} exited with code {code}", file=sys.stderr)
    if reason is not None:
        print(f"{PROG}: stopped early: {reason}", file=sys.stderr)
        # Ctrl-C is a normal end: the sink then says whether anything was measured
        return codes.get("sink", 1) if reason == "interrupted" else 1
    print(f"{PROG}: done; images in {args.out}/")
    return codes.get("sink", 1)


if __name__ == "__main__":
    sys.exit(main())
