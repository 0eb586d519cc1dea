"""segpp-rosbench without DDS: argument parsing, the summary of given samples, the table, the refusal."""
from __future__ import annotations

import math

import pytest

from segpp_ros.cli import rosbench
from segpp_ros.harness import rosbench as bench


def test_defaults() -> None:
    args = rosbench.parse_args([])
    assert args.sizes == [(480, 640), (1080, 1920)]
    assert (args.max_side, args.threads, args.rounds, args.frames_per_round) == (256, 1, 5, 6)
    assert args.gap_ms == 50.0 and args.json is None


def test_options() -> None:
    args = rosbench.parse_args(["--sizes", "1080x1920", "--max-side", "0", "--threads", "2", "--rounds", "3",
                                "--frames-per-round", "4", "--gap-ms", "0", "--json", "out/x.json"])
    assert args.sizes == [(1080, 1920)]
    assert (args.max_side, args.threads, args.rounds, args.frames_per_round, args.gap_ms) == (0, 2, 3, 4, 0.0)
    assert args.json == "out/x.json"
    params = bench.node_params(bench.Settings(max_side=args.max_side, threads=args.threads))
    assert params["max_side"] == 0 and params["threads"] == 2 and "max_frame_age" not in params   # 0: the default


@pytest.mark.parametrize("argv,message", [
    (["--sizes", "1080"], "HEIGHTxWIDTH"),
    (["--sizes", "16x16"], "at least 32"),
    (["--rounds", "1"], "at least 2 rounds"),
    (["--frames-per-round", "0"], "1 or more"),
    (["--threads", "-1"], "0 or more"),
    (["--gap-ms", "-5"], "--gap-ms"),
])
def test_bad_arguments(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        rosbench.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_outside_an_isolated_network(monkeypatch, capsys) -> None:
    monkeypatch.setattr(rosbench, "is_isolated_network", lambda: False)
    assert rosbench.main(["--sizes", "64x64"]) == 2
    assert "tools/netns-run" in capsys.readouterr().err


def test_measured_drops_the_warm_up_round() -> None:
    assert bench.measured([[100.0, 90.0], [1.0, 2.0], [3.0]]) == [1.0, 2.0, 3.0]
    assert bench.measured([[5.0]]) == []


def test_summary_from_samples() -> None:
    e2e = [float(v) for v in range(110, 130)]      # median 119.5, p95 128.05
    model = [100.0, 101.0, 99.0, 150.0, 100.0]     # median 100
    network = [20.0, 22.0, 21.0]
    s = bench.summarize((1080, 1920), (144, 256), e2e, model, network, lost=1,
                           node_latency_p50_ms=104.0, node_network_p50_ms=21.5, publish_call_ms=[2.0, 3.0, 2.5])
    assert (s.size, s.network_input, s.frames, s.lost) == ("1080x1920", "144x256", 20, 1)
    assert s.model_ms == 100.0 and s.network_ms == 21.0
    assert s.e2e_ms == pytest.approx(119.5)
    assert s.e2e_p95_ms == pytest.approx(128.05)
    assert s.overhead_ms == pytest.approx(19.5)
    assert s.overhead_p95_ms == pytest.approx(28.05)
    assert s.in_node_overhead_ms == pytest.approx(4.0)
    assert s.outside_node_ms == pytest.approx(15.5)
    assert s.publish_call_ms == 2.5 and s.node_network_p50_ms == 21.5


def test_overhead_against_the_nodes_own_model_time() -> None:
    """With the node's model_p50_ms, the in-process model time (another process, other noise) is
    only reported, not subtracted."""
    e2e = [float(v) for v in range(110, 130)]
    s = bench.summarize((1080, 1920), (144, 256), e2e, [90.0], [20.0], node_latency_p50_ms=114.0,
                           node_model_p50_ms=112.0)
    assert s.model_ms == 90.0 and s.node_model_p50_ms == 112.0
    assert s.overhead_ms == pytest.approx(7.5) and s.overhead_p95_ms == pytest.approx(16.05)
    assert s.in_node_overhead_ms == pytest.approx(2.0) and s.outside_node_ms == pytest.approx(5.5)
    per_frame = bench.summarize((1080, 1920), (144, 256), e2e, [90.0], [20.0], node_latency_p50_ms=114.0,
                                   node_model_p50_ms=112.0, node_overhead_p50_ms=1.4)
    assert per_frame.in_node_overhead_ms == 1.4


def test_summary_without_diagnostics_or_answers() -> None:
    s = bench.summarize((480, 640), (192, 256), [], [50.0], [20.0])
    assert s.in_node_overhead_ms is None and s.outside_node_ms is None and s.publish_call_ms is None
    assert math.isnan(s.e2e_ms) and math.isnan(s.overhead_ms) and s.frames == 0
    row = bench.format_table([s]).splitlines()[2]
    assert row == "| 480x640 | 192x256 | n/a | 50.0 | n/a | n/a | n/a | n/a | n/a | n/a |"


def test_table_and_target_line() -> None:
    small = bench.summarize((480, 640), (192, 256), [62.0, 60.0, 64.0], [57.0, 58.0, 56.0], [30.0],
                               node_latency_p50_ms=59.0)
    big = bench.summarize((1080, 1920), (144, 256), [180.0, 176.0, 190.0], [168.0, 170.0, 166.0], [23.0])
    table = bench.format_table([small, big]).splitlines()
    assert table[0] == "| " + " | ".join(bench.TABLE_HEADER) + " |"
    assert table[2] == "| 480x640 | 192x256 | n/a | 57.0 | 62.0 | 63.8 | 5.0 | 6.8 | 2.0 | 3.0 |"
    assert table[3].startswith("| 1080x1920 | 144x256 | n/a | 168.0 | 180.0 |")
    assert bench.target_line([small, big]) == \
        "target: median overhead at 1080p <= 10 ms: 12.0 ms, NOT met"
    assert bench.target_line([small]) is None
