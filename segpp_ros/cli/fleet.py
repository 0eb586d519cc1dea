"""segpp-fleet: many recorded bags labelled on a Ray cluster, each exactly as segpp-bag labels it.

    segpp-fleet recordings/ out/                          # every bag under recordings/, local Ray
    segpp-fleet 'drives/*.mcap' night.db3 out/ --workers 2 --merge fast --every 3
    segpp-fleet s3mount/fleet/ out/ --ray auto --workers 16 --gpus-per-worker 1   # a running cluster

Each input (a bag, a folder of bags, a glob) gives OUT/<input name>/, the bag segpp-bag writes
for it with the same options (or OUT/<input name>.mp4 with --video). Models load once per worker;
a worker that dies has its bag retried elsewhere (--retries); a bag that fails for its own
reasons is reported and the others go on; running the same command again skips the bags already
done, so a stopped job resumes. Ctrl-C stops after the bags' frames in progress: run it again
to resume. What is run and how: segpp_ros.bags.fleet; docs/fleet.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import positive_int, stop_on_sigint, write_report
from .bag import add_bag_options, check_bag_options, options_of

PROG = "segpp-fleet"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="bags, folders of bags or globs, then the output folder (last)")
    p.add_argument("--ray", default="local", metavar="ADDRESS",
                   help="local (default: a Ray instance on this machine), auto (RAY_ADDRESS or a running "
                        "`ray start --head`), or a cluster address (host:6379, ray://host:10001)")
    p.add_argument("--workers", type=positive_int, default=1, help="Ray actors, each with its own models (default: 1)")
    p.add_argument("--threads-per-worker", type=positive_int,
                   help="torch threads (and Ray CPUs) per worker (default: the cluster's CPUs / workers)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default: 0)")
    p.add_argument("--retries", type=int, default=2, help="retries of a bag whose worker died (default: 2)")
    p.add_argument("--video", action="store_true", help="write OUT/<name>.mp4 overlays instead of bags")
    add_bag_options(p)
    p.add_argument("--json", help="also write the report to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        parser.error("give at least one input and the output folder")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    check_bag_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..bags.fleet import FleetError, find_bags, format_report, run_fleet

    options = options_of(args, PROG)
    if options is None:
        return 1
    *inputs, out = args.paths
    # Ctrl-C: the bags in progress are abandoned (their temporary outputs go at the next run)
    with stop_on_sigint() as stop:
        try:
            report = run_fleet(find_bags(inputs), Path(out), options, workers=args.workers,
                               gpus_per_worker=args.gpus_per_worker, threads=args.threads_per_worker,
                               retries=args.retries, address=None if args.ray == "local" else args.ray,
                               video=args.video, stop=stop, progress=not args.quiet)
        except FleetError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 1
    print(format_report(report))
    if args.json:
        write_report(args.json, argv, report.to_dict())
    if report.stopped:
        print(f"{PROG}: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if report.count("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
