"""segpp-bench end to end on a tiny input: every preset row, JSON output, bad arguments."""
from __future__ import annotations

import json

import pytest
import torch

from segpp_ros.cli import bench
from segpp_ros.training import bench as benchmark


def test_bench_runs_every_preset_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "deep" / "bench.json"
    code = bench.main(["--sizes", "64x96", "--iters", "2", "--warmup", "0", "--classes", "3",
                       "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["none", "hq", "fast", "2x2", "downsample"]
    none = rows[0]
    assert none["speedup"] == 1.0 and none["agreement"] == 1.0
    # the computed rows, against figures derived here from the rows' own timings
    for r in rows[1:]:
        assert r["speedup"] == pytest.approx(none["median_ms"] / r["median_ms"], rel=1e-2), r
        assert 0.0 <= r["agreement"] <= 1.0
    # merging changes a random model's labels somewhere: agreement is measured, not assumed
    assert min(r["agreement"] for r in rows[1:]) < 1.0
    assert all(r["median_ms"] > 0 and r["size"] == "64x96" for r in rows)
    assert all(r["peak_mb"] is None or r["peak_mb"] >= 0 for r in rows)
    assert "| b0 | 64x96 | cpu | fp32 | 1 | hq |" in capsys.readouterr().out


def test_bench_against_hf_adds_a_row() -> None:
    cpu = torch.device("cpu")
    ours, hf = benchmark.hf_pair("b0", 3, cpu, torch.float32)
    rows = benchmark.run_case(ours, hf, "b0", (64, 64), "fp32", cpu, presets=["none"], warmup=0, iters=1,
                              memory=False)
    assert [r.strategy for r in rows] == ["none", benchmark.HF_ROW]
    assert rows[1].agreement == 1.0       # same weights, same function


@pytest.mark.parametrize("argv,message", [
    (["--presets", "none,turbo"], "unknown preset"),
    (["--precision", "fp8"], "--precision"),
    (["--sizes", "16x16"], "at least 32"),
])
def test_bench_rejects_bad_arguments(argv, message, capsys) -> None:
    assert bench.main(argv) == 2
    assert message in capsys.readouterr().err
