"""segpp-camerabench: the summary of given samples, the arguments, and one short real run (two
cameras through a node process, both modes switched live)."""
from __future__ import annotations

import json

import pytest

from segpp_ros.cli import camerabench as cli
from segpp_ros.harness import camerabench

from .rosgraph import require_isolated_network


def test_rows_and_speedups_from_samples() -> None:
    batched = camerabench.ModeRun((720, 1280), 4, "batched", seconds=8.0, sent=480,
                                  latency_ms=[float(v) for v in range(100, 140)])
    single = camerabench.ModeRun((720, 1280), 4, "one at a time", seconds=8.0, sent=480,
                                 latency_ms=[float(v) for v in range(200, 232)])
    rows = [camerabench.summarize(run, 256) for run in (batched, single)]
    assert (rows[0].network_input, rows[0].labels_per_s, rows[0].per_camera_per_s) == ("144x256", 5.0, 1.25)
    assert rows[0].latency_p50_ms == 119.5 and rows[0].answered == 40 and rows[0].sent == 480
    assert rows[1].labels_per_s == 4.0
    assert camerabench.speedups(rows) == ["720x1280 x 4: 1.25x"]
    table = camerabench.format_table(rows).splitlines()
    assert len(table) == 4 and "| 720x1280 | 144x256 | 4 | batched | 5.0 | 1.2 | 120 |" in table[2]
    params = camerabench.node_params(camerabench.Settings(window_ms=5.0), 3)
    assert params["cameras"] == ["cam0", "cam1", "cam2"] and params["batch_window_ms"] == 5.0
    assert params["pose.enable"] is False


@pytest.mark.parametrize("argv, message", [(["--cameras", "0"], "1 or more"), (["--cameras", ","], "at least one"),
                                           (["--sizes", "8x8"], "at least 32")])
def test_bad_arguments(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_refuses_outside_an_isolated_network(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "is_isolated_network", lambda: False)
    assert cli.main(["--sizes", "64x64"]) == 2
    assert "tools/netns-run" in capsys.readouterr().err


@pytest.mark.ros_node
def test_a_short_run_measures_both_modes(tmp_path, capsys) -> None:
    require_isolated_network()
    out = tmp_path / "camerabench.json"
    assert cli.main(["--sizes", "96x128", "--cameras", "2", "--seconds", "1", "--rounds", "1", "--rate", "8",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 96x128 | 96x128 | 2 | batched |" in text and "| 96x128 | 96x128 | 2 | one at a time |" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["batched", "one at a time"]
    for row in rows:
        # 2 cameras at 8 frames/s for a second: the node keeps up, nearly every frame answered
        assert row["sent"] == 16 and row["answered"] >= 12 and row["latency_p50_ms"] > 0, row
