"""segpp-depthbench: a short in-process run (no DDS) gives a row per depth size and stride whose
point count is what the synthetic depth holds, and its JSON; the memory run refuses to start DDS
outside an isolated network namespace."""
from __future__ import annotations

import json

import numpy as np

from segpp_ros.cli import depthbench
from segpp_ros.harness.depthbench import intrinsics, synthetic_depth


def test_a_short_run_counts_the_points_the_depth_holds(tmp_path, capsys) -> None:
    out = tmp_path / "depth.json"
    assert depthbench.main(["--depth-sizes", "120x160,90x160", "--strides", "1,4", "--iters", "1", "--seconds", "0",
                            "--json", str(out)]) == 0
    assert "| 120x160 | 4 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["costs"]
    assert [(r["depth"], r["stride"]) for r in rows] == [("120x160", 1), ("120x160", 4), ("90x160", 1), ("90x160", 4)]
    for r in rows:
        h, w = map(int, r["depth"].split("x"))
        mm = synthetic_depth((h, w))[:: r["stride"], :: r["stride"]]
        assert r["points"] == int(((mm > 0) & (mm <= 10_000)).sum()) > 0     # points.max_range_m 10
        assert r["total_ms"] >= max(r["depth_ms"], r["points_ms"], r["keypoints_ms"]) > 0


def test_the_synthetic_views_are_one_view_at_two_resolutions() -> None:
    """Both depth sizes must pass the node's alignment check against the 720x1280 colour camera."""
    from segpp_ros.inference.depth import depth_frame

    for hw in ((480, 640), (720, 1280)):
        depth = depth_frame(synthetic_depth(hw), "16UC1", intrinsics(hw), "d", (720, 1280), intrinsics((720, 1280)))
        assert depth.hw == hw and np.isnan(depth.metres).mean() < 0.05


def test_the_memory_run_needs_an_isolated_network(monkeypatch, capsys) -> None:
    monkeypatch.setattr(depthbench, "is_isolated_network", lambda: False)
    assert depthbench.main(["--seconds", "1"]) == 2
    assert "netns-run" in capsys.readouterr().err
