"""A fleet's recordings through segpp-bag's runner on a Ray cluster (segpp-fleet).

Many bags (ROS 2 folders, .mcap / .db3 files, ROS 1 .bag files; folders of them; globs) are each
labelled exactly as ``segpp-bag`` labels one (``bags.runner.process``, same options), by a
bounded pool of Ray actors that load the models once and keep them from bag to bag:

- **Where.** ``address`` None starts a local Ray instance on this machine's cores; an address
  (``ray://...``, ``host:6379``, or ``auto`` for RAY_ADDRESS / a running ``ray start --head``)
  joins that cluster. Every node must have this environment installed and reach the input and
  output paths (shared storage).
- **Workers.** ``workers`` actors, each with ``threads`` torch threads and as many Ray CPUs
  (workers x threads never more than the cluster's CPUs: no oversubscription), and
  ``gpus_per_worker`` GPUs each (Ray sets CUDA_VISIBLE_DEVICES; ``device`` auto then takes the
  GPU). Frames of a bag go through its worker ``batch`` at a time; bags are spread over workers.
- **Output.** OUT/<input name>/ (a bag folder), or OUT/<input name>.mp4 with ``video``: written
  under OUT/.segpp-fleet/tmp/ and renamed when complete, so nothing half-written looks done.
- **Faults.** A worker that dies (killed process, lost node) has its bag retried on a fresh
  worker, up to ``retries`` times; a bag that fails for its own reasons (unreadable, no image
  topic) is reported with the reason, and the others go on.
- **Resume.** OUT/.segpp-fleet/manifest.json records each finished bag with its input's size
  and modification time and a hash of the options; the same command run again skips those, so
  a stopped job resumes where it stopped.

Ray is imported only here (an optional extra: ``pip install segpp[fleet]``); the node and
segpp-bag never import it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .runner import Options

STATE_DIR = ".segpp-fleet"
BAG_SUFFIXES = (".mcap", ".db3", ".bag")


class FleetError(RuntimeError):
    """A fleet job that cannot start as asked; the message names the problem and the fix."""


# -- what to do -----------------------------------------------------------------------------------
def is_bag(path: Path) -> bool:
    """A ROS 2 bag folder (metadata.yaml), or a bag file (.mcap, .db3, ROS 1 .bag)."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def find_bags(inputs: Sequence[str]) -> list[Path]:
    """The bags named by ``inputs``: bags, folders holding bags (searched down, a bag folder's own
    files not counted twice) and globs; sorted, each once."""
    found: list[Path] = []
    for given in inputs:
        matches = sorted(Path(p) for p in glob.glob(given)) if glob.has_magic(given) else [Path(given)]
        if not matches:
            raise FleetError(f"{given!r} matches nothing")
        for path in matches:
            if is_bag(path):
                found.append(path)
            elif path.is_dir():
                found += _bags_under(path)
            else:
                raise FleetError(f"{path} is not a bag (a ROS 2 bag folder with metadata.yaml, or a .mcap, .db3 or "
                                 ".bag file) nor a folder of bags")
    unique = sorted({p.resolve(): p for p in found}.values())
    if not unique:
        raise FleetError(f"no bag found in {', '.join(inputs)}")
    return unique


def _bags_under(folder: Path) -> list[Path]:
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if STATE_DIR in dirs:
            dirs.remove(STATE_DIR)
        if "metadata.yaml" in files:
            out.append(here)
            dirs.clear()                       # its storage files belong to it
            continue
        out += [here / f for f in sorted(files) if Path(f).suffix in BAG_SUFFIXES]
    return out


def bag_name(path: Path) -> str:
    """The output name of a bag: its folder's name, or its file name without the suffix."""
    return path.name if path.is_dir() else path.stem


def fingerprint(path: Path) -> tuple[int, int]:
    """(bytes, latest modification ns) of a bag file or of every file of a bag folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def options_hash(options: Options, video: bool) -> str:
    """What decides a bag's output, hashed: the options (weights by path, size and time) and
    whether it is a video."""
    record = asdict(options)
    record["params"] = dict(sorted(options.params.items()))
    if options.weights and Path(options.weights).is_file():
        record["weights_file"] = list(fingerprint(Path(options.weights)))
    record["video"] = video
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    name: str
    source: Path
    size: int
    mtime_ns: int


def plan(bags: Sequence[Path]) -> list[Job]:
    """One job per bag; two bags with one output name are refused (rename one, or label them
    into two output folders)."""
    jobs: dict[str, Job] = {}
    for bag in bags:
        name = bag_name(bag)
        if name in jobs:
            raise FleetError(f"{jobs[name].source} and {bag} would both write {name}: run them into separate output "
                             "folders, or rename one")
        jobs[name] = Job(name, bag, *fingerprint(bag))
    return list(jobs.values())


class Manifest:
    """OUT/.segpp-fleet/manifest.json: the bags finished, with what made them. Written by the
    driver only, replaced atomically after each finished bag."""

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_DIR / "manifest.json"
        self.entries: dict[str, dict[str, Any]] = (json.loads(self.path.read_text())["bags"]
                                                   if self.path.is_file() else {})

    def done(self, job: Job, digest: str, output: Path) -> bool:
        entry = self.entries.get(job.name)
        return (entry is not None and output.exists() and entry["input"] == str(job.source.resolve())
                and entry["size"] == job.size and entry["mtime_ns"] == job.mtime_ns and entry["options"] == digest)

    def record(self, job: Job, digest: str, **result: Any) -> None:
        self.entries[job.name] = {"input": str(job.source.resolve()), "size": job.size, "mtime_ns": job.mtime_ns,
                                  "options": digest, **result}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bags": self.entries}, indent=1))
        os.replace(tmp, self.path)


# -- the report -----------------------------------------------------------------------------------------
@dataclass
class BagResult:
    name: str
    input: str
    status: str                 # done, skipped, failed, not done (stopped)
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    worker: str = ""
    attempts: int = 0


@dataclass
class WorkerStats:
    frames: int = 0
    busy_s: float = 0.0
    bags: int = 0


@dataclass
class Report:
    bags: list[BagResult] = field(default_factory=list)
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    wall_s: float = 0.0
    retried: int = 0
    stopped: bool = False
    cluster: str = ""
    threads: int = 0

    def count(self, status: str) -> int:
        return sum(b.status == status for b in self.bags)

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.bags if b.status == "done")

    def to_dict(self) -> dict[str, Any]:
        return {"bags": [asdict(b) for b in self.bags], "workers": {k: asdict(v) for k, v in self.workers.items()},
                "wall_s": round(self.wall_s, 2), "frames": self.frames,
                "fps": round(self.frames / self.wall_s, 2) if self.wall_s else None, "retried": self.retried,
                "stopped": self.stopped, "cluster": self.cluster, "threads_per_worker": self.threads,
                "done": self.count("done"), "skipped": self.count("skipped"), "failed": self.count("failed")}


def format_report(report: Report) -> str:
    from ..inference.timing import markdown_table

    lines = [markdown_table(["bag", "status", "frames", "s", "worker", "attempts", "reason"],
                            [[b.name, b.status, str(b.frames), f"{b.seconds:.1f}", b.worker, str(b.attempts),
                              b.reason] for b in report.bags]), "",
             markdown_table(["worker", "bags", "frames", "busy s", "frames/s"],
                            [[name, str(w.bags), str(w.frames), f"{w.busy_s:.1f}",
                              f"{w.frames / w.busy_s:.2f}" if w.busy_s else "-"]
                             for name, w in sorted(report.workers.items())]), ""]
    fps = report.frames / report.wall_s if report.wall_s else 0.0
    lines.append(f"{report.count('done')} done, {report.count('skipped')} skipped, {report.count('failed')} failed"
                 f"{', stopped early' if report.stopped else ''}; {report.frames} frames in {report.wall_s:.1f} s "
                 f"({fps:.2f} frames/s overall); {report.retried} retried after a worker was lost")
    return "\n".join(lines)


# -- Ray ------------------------------------------------------------------------------------------------
def _worker_class(ray: Any) -> Any:
    @ray.remote(max_restarts=0, max_task_retries=0)
    class BagWorker:
        """One model load, many bags."""

        def __init__(self, options: Options, threads: int) -> None:
            import torch

            from .runner import Labeller

            torch.set_num_threads(threads)
            self.options = options
            self.labeller = Labeller(options)

        def pid(self) -> int:
            return os.getpid()

        def run(self, name: str, source: str, target: str, video: bool, board: Any) -> dict[str, Any]:
            from .runner import process

            class Bar:
                def __init__(self) -> None:
                    self.n = 0

                def update(self, n: int = 1) -> None:
                    self.n += n
                    board.add.remote(name, n)

                def close(self) -> None:
                    pass
            start = time.monotonic()
            summary = process(Path(source), None if video else Path(target), self.options,
                              video=Path(target) if video else None, progress=lambda total: Bar(),
                              labeller=self.labeller)
            return {"frames": summary.processed, "seconds": time.monotonic() - start, "stopped": summary.stopped}
    return BagWorker


def _board_class(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class ProgressBoard:
        """Frames done per bag, as the workers report them."""

        def __init__(self) -> None:
            self.frames: dict[str, int] = {}

        def add(self, name: str, n: int) -> None:
            self.frames[name] = self.frames.get(name, 0) + n

        def snapshot(self) -> dict[str, int]:
            return dict(self.frames)
    return ProgressBoard


def connect(address: str | None, workers: int) -> tuple[Any, str, float]:
    """(ray, a description, the cluster's CPUs): a local instance (address None) or a cluster."""
    try:
        import ray
    except ImportError:
        raise FleetError("segpp-fleet needs Ray: pip install 'segpp[fleet]' (or ray==2.60.0)") from None
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    cpus = float(ray.cluster_resources().get("CPU", 1))
    where = "local" if address is None else address
    return ray, f"{where}: {len(ray.nodes())} node(s), {cpus:g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs", cpus


def threads_per_worker(cpus: float, workers: int, given: int | None) -> int:
    """torch threads (and Ray CPUs) per worker: ``given``, else the cluster's CPUs shared out;
    refused when workers x threads would oversubscribe the CPUs."""
    threads = given or max(1, int(cpus) // workers)
    if workers * threads > cpus:
        raise FleetError(f"{workers} workers x {threads} threads need {workers * threads} CPUs; the cluster has "
                         f"{cpus:g}: use fewer --workers or --threads-per-worker")
    return threads


def run_fleet(bags: Sequence[Path], out: Path, options: Options, *, workers: int = 1, gpus_per_worker: float = 0.0,
              threads: int | None = None, retries: int = 2, address: str | None = None, video: bool = False,
              stop: threading.Event | None = None, progress: bool = True,
              on_progress: Callable[[dict[str, int], dict[str, tuple[str, int]]], None] | None = None) -> Report:
    """Label ``bags`` into ``out`` (see the module docstring). ``on_progress(frames per bag,
    bag -> (worker, pid) running it)`` is called as frames are reported (tests use it to kill a
    worker or stop the run mid-way). ``stop``: when set, in-flight bags are abandoned (their
    temporary outputs removed on the next run) and the report says which bags were not done."""
    stop = stop or threading.Event()
    started = time.monotonic()
    jobs = plan(bags)
    digest = options_hash(options, video)
    out.mkdir(parents=True, exist_ok=True)
    tmp_dir = out / STATE_DIR / "tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)        # what a stopped or crashed run left
    tmp_dir.mkdir(parents=True)
    manifest = Manifest(out)
    report = Report()

    def output_of(job: Job) -> Path:
        return out / (f"{job.name}.mp4" if video else job.name)

    todo: deque[Job] = deque()
    results: dict[str, BagResult] = {}
    for job in jobs:
        if manifest.done(job, digest, output_of(job)):
            results[job.name] = BagResult(job.name, str(job.source), "skipped", "complete in an earlier run",
                                          manifest.entries[job.name].get("frames", 0))
        else:
            todo.append(job)
    if todo:
        _run_jobs(todo, results, report, out, tmp_dir, output_of, manifest, digest, options, workers,
                  gpus_per_worker, threads, retries, address, video, stop, progress, on_progress)
    report.bags = [results.get(job.name) or BagResult(job.name, str(job.source), "not done", "stopped")
                   for job in jobs]
    report.wall_s = time.monotonic() - started
    return report


def _run_jobs(todo: deque[Job], results: dict[str, BagResult], report: Report, out: Path, tmp_dir: Path,
              output_of: Callable[[Job], Path], manifest: Manifest, digest: str, options: Options, workers: int,
              gpus_per_worker: float, threads: int | None, retries: int, address: str | None, video: bool,
              stop: threading.Event, progress: bool, on_progress: Callable | None) -> None:
    from tqdm import tqdm

    ray, report.cluster, cpus = connect(address, workers)
    report.threads = threads_per_worker(cpus, workers, threads)
    worker_cls = _worker_class(ray).options(num_cpus=report.threads, num_gpus=gpus_per_worker)
    board = _board_class(ray).remote()
    names = iter(f"w{i}" for i in range(1, 1_000_000))
    pids: dict[str, int] = {}

    def new_workers(n: int) -> list[tuple[str, Any]]:
        """``n`` workers, started together (each loads the models), ready when returned."""
        made = [(next(names), worker_cls.remote(options, report.threads)) for _ in range(n)]
        for (name, _), pid in zip(made, ray.get([actor.pid.remote() for _, actor in made])):
            pids[name] = pid
            report.workers[name] = WorkerStats()
        return made

    idle = new_workers(min(workers, len(todo)))
    attempts: dict[str, int] = {}
    inflight: dict[Any, tuple[Job, str, Any, Path, float]] = {}
    bags_bar = tqdm(total=len(todo), unit="bag", desc="segpp-fleet bags", disable=not progress, position=0)
    frames_bar = tqdm(unit="frame", desc="segpp-fleet frames", disable=not progress, position=1)
    shown = 0
    try:
        while (todo or inflight) and not stop.is_set():
            while todo and idle:
                job = todo.popleft()
                worker, actor = idle.pop()
                attempts[job.name] = attempts.get(job.name, 0) + 1
                target = tmp_dir / f"{job.name}.{attempts[job.name]}{'.mp4' if video else ''}"
                ref = actor.run.remote(job.name, str(job.source), str(target), video, board)
                inflight[ref] = (job, worker, actor, target, time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.1)
            frames = ray.get(board.snapshot.remote())
            total = sum(frames.values())
            frames_bar.update(total - shown)
            shown = total
            if on_progress is not None:
                running = {job.name: (worker, pids[worker]) for job, worker, *_ in inflight.values()}
                on_progress(frames, running)
            for ref in ready:
                job, worker, actor, target, began = inflight.pop(ref)
                stats = report.workers[worker]
                try:
                    done = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError) as err:
                    # the worker is gone (killed, out of memory, node lost): the bag goes elsewhere
                    stats.busy_s += time.monotonic() - began
                    _remove(target)
                    if attempts[job.name] <= retries:
                        report.retried += 1
                        todo.appendleft(job)
                    else:
                        results[job.name] = BagResult(job.name, str(job.source), "failed",
                                                      f"its worker was lost {attempts[job.name]} times: "
                                                      f"{type(err).__name__}", worker=worker,
                                                      attempts=attempts[job.name])
                        bags_bar.update()
                    idle += new_workers(1)
                    continue
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if getattr(err, "cause", None) is not None else err
                    stats.busy_s += time.monotonic() - began
                    results[job.name] = BagResult(job.name, str(job.source), "failed",
                                                  f"{type(cause).__name__}: {cause}".splitlines()[0][:300],
                                                  worker=worker, attempts=attempts[job.name])
                    idle.append((worker, actor))
                    bags_bar.update()
                    continue
                stats.busy_s += done["seconds"]
                stats.frames += done["frames"]
                stats.bags += 1
                final = output_of(job)
                _remove(final)                  # an earlier run's, not in the manifest (other options)
                os.replace(target, final)
                manifest.record(job, digest, frames=done["frames"], seconds=round(done["seconds"], 2), worker=worker)
                results[job.name] = BagResult(job.name, str(job.source), "done", frames=done["frames"],
                                              seconds=round(done["seconds"], 2), worker=worker,
                                              attempts=attempts[job.name])
                idle.append((worker, actor))
                bags_bar.update()
        report.stopped = stop.is_set() and bool(todo or inflight)
    finally:
        bags_bar.close()
        frames_bar.close()
        for _, _, actor, _, _ in inflight.values():
            ray.kill(actor)
        for _, actor in idle:
            ray.kill(actor)
        ray.kill(board)


def _remove(path: Path) -> None:
    """A bag folder or a video file, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
