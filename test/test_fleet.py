"""segpp-fleet on a local Ray instance (2 CPUs): bags in both ROS 2 storages, with different image
topics, sizes and encodings, labelled by two workers equal message for message to segpp-bag's
single-process run of each; a worker killed mid-bag (its bag retried, still equal); a corrupt
bag reported while the others are done; a rerun skipping everything; Ctrl-C, then a rerun that
resumes; Ray kept out of the node and segpp-bag."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from segpp_ros.bags.fleet import FleetError, find_bags, run_fleet
from segpp_ros.bags.runner import Options, process
from segpp_ros.bags.synthetic import sample_images, write_image_bag

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "segpp_ros" / "samples").glob("frame_*.jpg"))
OPTIONS = Options(device="cpu", backend="torch", max_side=96, batch=2)
# name, storage, topics, frames, size
BAGS = [("front", "mcap", ("/front/image_raw",), 6, (96, 128)),
        ("rear", "sqlite3", ("/rear/camera/image",), 5, (72, 128)),
        ("side", "mcap", ("/side/image/compressed",), 4, (96, 160)),
        ("night", "sqlite3", ("/cam/image",), 5, (64, 96))]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def make_bags(root: Path, specs=BAGS) -> dict[str, Path]:
    """The bags of ``specs``: 'night' inside a folder of bags, the others at the top."""
    paths = {}
    for name, storage, topics, n, (h, w) in specs:
        path = (root / "archive" / name) if name == "night" else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image_bag(path, sample_images(n, h, w, SAMPLES), storage, topics)
        paths[name] = path
    return paths


def plain(value):
    """A deserialised message as plain, comparable data (arrays as lists)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__ if k != "__msgtype__"}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def messages(bag: Path) -> dict[str, list]:
    """Topic -> [(receive time, message content)] (not raw bytes: CDR padding bytes are whatever
    the serialiser's buffer held)."""
    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for connection, timestamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append((timestamp, plain(reader.deserialize(raw, connection.msgtype))))
    return {topic: sorted(v, key=lambda item: item[0]) for topic, v in out.items()}


def assert_same_as_segpp_bag(fleet_out: Path, bags: dict[str, Path], tmp: Path, options: Options = OPTIONS) -> None:
    for name, bag in bags.items():
        reference = tmp / "reference" / name
        if not reference.exists():
            process(bag, reference, replace(options, batch=1))
        got, want = messages(fleet_out / name), messages(reference)
        assert set(got) == set(want), name
        for topic in want:
            assert got[topic] == want[topic], (name, topic)


def test_bags_from_paths_folders_and_globs(tmp_path) -> None:
    bags = make_bags(tmp_path, BAGS[:2] + BAGS[3:])
    found = find_bags([str(tmp_path / "fr*"), str(tmp_path / "rear"), str(tmp_path / "archive")])
    assert found == [bags["front"], bags["night"], bags["rear"]] or sorted(found) == sorted(bags.values())
    with pytest.raises(FleetError, match="matches nothing"):
        find_bags([str(tmp_path / "nope*")])


def test_four_bags_on_two_workers_equal_segpp_bag_on_each(tmp_path, ray_local) -> None:
    bags = make_bags(tmp_path / "in")
    out = tmp_path / "out"
    report = run_fleet(find_bags([str(tmp_path / "in" / "*")]), out, OPTIONS, workers=2, progress=False)
    assert report.count("done") == 4 and report.count("failed") == 0 and report.threads == 1
    assert sum(w.bags for w in report.workers.values()) == 4 and len(report.workers) == 2
    assert report.frames == sum(spec[3] for spec in BAGS)
    assert_same_as_segpp_bag(out, bags, tmp_path)
    assert not list((out / ".segpp-fleet" / "tmp").iterdir())          # every output renamed into place

    # the same command again: every bag skipped, no worker started
    again = run_fleet(find_bags([str(tmp_path / "in" / "*")]), out, OPTIONS, workers=2, progress=False)
    assert again.count("skipped") == 4 and again.workers == {}
    # other options: done again
    other = run_fleet(find_bags([str(tmp_path / "in" / "front")]), out, replace(OPTIONS, merge="fast"), workers=1,
                      progress=False)
    assert other.count("done") == 1


def test_a_killed_worker_has_its_bag_retried_and_the_output_is_still_equal(tmp_path, ray_local) -> None:
    bags = make_bags(tmp_path / "in", [("long", "mcap", ("/cam/image",), 30, (96, 128)),
                                       ("short", "sqlite3", ("/cam/image",), 4, (64, 96))])
    killed: list[int] = []

    def kill_mid_bag(frames: dict[str, int], running: dict[str, tuple[str, int]]) -> None:
        if not killed and frames.get("long", 0) >= 3 and "long" in running:
            killed.append(running["long"][1])
            os.kill(running["long"][1], signal.SIGKILL)

    report = run_fleet(list(bags.values()), tmp_path / "out", OPTIONS, workers=2, retries=1, progress=False,
                       on_progress=kill_mid_bag)
    assert killed and report.retried == 1
    assert report.count("done") == 2 and [b.attempts for b in report.bags if b.name == "long"] == [2]
    assert len(report.workers) == 3                                     # the lost one replaced
    assert_same_as_segpp_bag(tmp_path / "out", bags, tmp_path)


def test_a_corrupt_bag_is_reported_and_the_others_are_done(tmp_path, ray_local) -> None:
    bags = make_bags(tmp_path / "in", BAGS[:2])
    broken = tmp_path / "in" / "broken.mcap"
    broken.write_bytes(b"\x89MCAP0\r\n" + os.urandom(2000))
    report = run_fleet(find_bags([str(tmp_path / "in")]), tmp_path / "out", OPTIONS, workers=2, progress=False)
    result = {b.name: b for b in report.bags}
    assert result["broken"].status == "failed" and "cannot read the bag" in result["broken"].reason
    assert result["front"].status == result["rear"].status == "done"
    assert not (tmp_path / "out" / "broken").exists()
    assert_same_as_segpp_bag(tmp_path / "out", bags, tmp_path)


def test_ctrl_c_stops_and_the_same_command_resumes(tmp_path) -> None:
    """The command line, as a user runs it: SIGINT once the first bag is done, exit 130 with
    the finished bags recorded; the same command again does the rest, equal to segpp-bag."""
    pytest.importorskip("ray")
    bags = make_bags(tmp_path / "in", [(f"b{i}", "mcap", ("/cam/image",), 12, (96, 128)) for i in range(4)])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "segpp_ros.cli.fleet", str(tmp_path / "in"), str(out), "--workers", "1",
           "--device", "cpu", "--backend", "torch", "--max-side", "96", "--batch", "2", "--quiet",
           "--json", str(tmp_path / "report.json")]
    manifest = out / ".segpp-fleet" / "manifest.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (manifest.is_file() and json.loads(manifest.read_text())["bags"]):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no bag finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    first = json.loads((tmp_path / "report.json").read_text())
    assert first["stopped"] and 1 <= first["done"] < 4, first
    done_first = {b["name"] for b in first["bags"] if b["status"] == "done"}
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    second = json.loads((tmp_path / "report.json").read_text())
    assert {b["name"] for b in second["bags"] if b["status"] == "skipped"} == done_first
    assert second["done"] == 4 - len(done_first) and second["failed"] == 0
    assert_same_as_segpp_bag(out, bags, tmp_path, Options(device="cpu", backend="torch", max_side=96))


def test_the_node_and_segpp_bag_never_import_ray() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"             # any import of ray would fail
            "import segpp_ros.cli.bag, segpp_ros.bags.runner, segpp_ros.ros.node, segpp_ros.cli.node\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_videos_instead_of_bags(tmp_path, ray_local) -> None:
    import cv2

    bags = make_bags(tmp_path / "in", BAGS[:1])
    report = run_fleet(list(bags.values()), tmp_path / "out", OPTIONS, workers=1, video=True, progress=False)
    assert report.count("done") == 1
    movie = cv2.VideoCapture(str(tmp_path / "out" / "front.mp4"))
    assert int(movie.get(cv2.CAP_PROP_FRAME_COUNT)) == BAGS[0][3]
    assert (int(movie.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(movie.get(cv2.CAP_PROP_FRAME_WIDTH))) == BAGS[0][4]
    again = run_fleet(list(bags.values()), tmp_path / "out", OPTIONS, workers=1, video=True, progress=False)
    assert again.count("skipped") == 1
