"""How segpp-fleet's throughput scales with workers on this machine (segpp-fleetbench).

The same bags (made from the bundled frames: ``bags`` bags of ``frames`` frames at ``size``, MCAP)
are labelled once per worker count, in one run and one Ray instance, each into a fresh output
folder, with the cores shared out (workers x threads = the CPUs). Reported per worker count: the
wall time from the first bag handed out to the last one renamed into place (the workers' model
loading included, as a user waits for it; Ray's own start, a few seconds once per job, is not), frames per second overall and per worker (frames over
the time it was busy), and the speed-up over the first row. The first row is the baseline: the
same bags through segpp-bag one after the other in this process, with all the cores (the models
loaded for each bag, as a shell loop over segpp-bag does).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .fleet import connect, run_fleet
from .runner import Options
from .synthetic import sample_images, write_image_bag


@dataclass
class ScalingRow:
    workers: str
    threads: int
    bags: int
    frames: int
    wall_s: float
    fps: float
    fps_per_worker: float
    speedup: float


def scaling(samples: Sequence[Path], options: Options, workers: Sequence[int], bags: int = 8, frames: int = 20,
            size: tuple[int, int] = (480, 640)) -> list[ScalingRow]:
    rows: list[ScalingRow] = []
    with tempfile.TemporaryDirectory(prefix="segpp-fleetbench-") as tmp:
        root = Path(tmp)
        images = sample_images(frames, *size, samples)
        inputs = []
        for i in range(bags):
            inputs.append(root / "in" / f"bag{i}")
            write_image_bag(inputs[-1], images, "mcap")
        import torch

        from .runner import process

        saved = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        start = time.monotonic()
        done = sum(process(bag, root / "out-loop" / bag.name, options).processed for bag in inputs)
        wall = time.monotonic() - start
        torch.set_num_threads(saved)
        rows.append(ScalingRow("segpp-bag loop", os.cpu_count() or 1, len(inputs), done, round(wall, 1),
                               round(done / wall, 2), round(done / wall, 2), 1.0))
        connect(None, max(workers))      # Ray itself started once, before any timed run
        for n in workers:
            start = time.monotonic()
            report = run_fleet(inputs, root / f"out-{n}", options, workers=n, progress=False)
            wall = time.monotonic() - start
            per_worker = [w.frames / w.busy_s for w in report.workers.values() if w.busy_s]
            fps = report.frames / wall
            rows.append(ScalingRow(str(n), report.threads, report.count("done"), report.frames, round(wall, 1),
                                   round(fps, 2), round(sum(per_worker) / len(per_worker), 2) if per_worker else 0.0,
                                   round(fps / rows[0].fps, 2) if rows else 1.0))
    return rows


def format_scaling(rows: Sequence[ScalingRow]) -> str:
    from ..inference.timing import markdown_table

    return markdown_table(["workers", "threads each", "bags", "frames", "wall s", "frames/s", "frames/s per worker",
                           "speed-up"],
                          [[r.workers, str(r.threads), str(r.bags), str(r.frames), f"{r.wall_s:.1f}",
                            f"{r.fps:.2f}", f"{r.fps_per_worker:.2f}", f"{r.speedup:.2f}"] for r in rows])
