"""Command-line tools: one module per segpp-* console command, argument parsing and calls only.

The work happens in the layers below (model, inference, training, ros); a tool parses its
arguments, calls them and prints. This package imports neither torch nor ROS at import time:
the ROS tools (camera, sink) import it too.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import Any, Iterator


def parse_size(text: str, minimum: int = 32) -> tuple[int, int]:
    """argparse type: '1024x2048' -> (1024, 2048) as (height, width), both sides >= minimum
    (32 by default: the network's smallest input)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like HEIGHTxWIDTH, e.g. 1024x2048") from None
    if min(h, w) < minimum:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides must be at least {minimum} pixels")
    return h, w


def _float(text: str, allowed, requirement: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be {requirement}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    return _float(text, lambda v: v > 0, "greater than 0")


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0."""
    return _float(text, lambda v: v >= 0, "0 or more")


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def positive_ints(text: str) -> list[int]:
    """argparse type: comma-separated ints, each 1 or more, at least one ('1,2,4')."""
    values = [positive_int(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: expected at least one integer, comma-separated (e.g. 1,2,4)")
    return values


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """argparse type: comma-separated HEIGHTxWIDTH sizes, at least one."""
    sizes = [parse_size(s) for s in text.split(",") if s.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"{text!r}: expected at least one HEIGHTxWIDTH size, comma-separated")
    return sizes


def add_timing_args(p: argparse.ArgumentParser, warmup: int, iters: int, threads: int, rounds_of: str) -> None:
    """The options every benchmark takes: threads, warm-up and timed rounds, seed, JSON output."""
    p.add_argument("--threads", type=int, default=threads, help="CPU threads (0: torch default)")
    p.add_argument("--warmup", type=int, default=warmup, help=f"untimed rounds over all {rounds_of}")
    p.add_argument("--iters", type=int, default=iters, help=f"timed rounds over all {rounds_of}")
    p.add_argument("--seed", type=int, default=0, help="input seed")
    p.add_argument("--json", help="also write the rows and the environment to this JSON file")


def parse_preset_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parsed arguments with the comma-separated --presets split into a list."""
    args = parser.parse_args(argv)
    args.presets = [p for p in args.presets.split(",") if p]
    return args


def preset_error(prog: str, presets: list[str]) -> str | None:
    """The message for an empty or unknown preset list (None when all are known)."""
    from ..model.merge import PRESETS  # here: the ROS tools import this package and need no torch

    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        return f"{prog}: unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}"
    return None


def write_report(path: str, argv: list[str] | None, parts: dict[str, Any], **environment: Any) -> None:
    """A benchmark's JSON file: {"environment": {python, machine, torch (when loaded), argv, and
    ``environment``}, **parts} (the rows, as lists of dicts); its folder is made."""
    import json
    import os
    import platform

    torch = sys.modules.get("torch")
    env = {"python": platform.python_version(), "machine": platform.machine(),
           **({"torch": torch.__version__} if torch is not None else {}),
           "argv": sys.argv[1:] if argv is None else argv, **environment}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": env, **parts}, f, indent=2)


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[threading.Event]:
    """Ctrl-C sets the event instead of raising: the tool ends what is in progress and closes its
    outputs properly (the previous handler is back afterwards)."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
