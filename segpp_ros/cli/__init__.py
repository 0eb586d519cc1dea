"""Command-line tools (segpp-* console scripts); shared argument handling of the benchmarks."""
from __future__ import annotations

import argparse


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
