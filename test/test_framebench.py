"""segpp-framebench: a short run gives both frame paths per case with a consistent split, and the
19- against 150-class label step; bad arguments are refused."""
from __future__ import annotations

import json

import pytest

from segpp_ros.cli import framebench


def test_a_short_run(tmp_path, capsys) -> None:
    out = tmp_path / "frame.json"
    assert framebench.main(["--sizes", "120x160,96x128", "--max-sides", "64", "--threads", "1", "--classes-size",
                            "120x160", "--warmup", "0", "--iters", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 120x160 | 64 | 48x64 | 1 | fast |" in text and "| 96x128 | 64 | 48x64 | 1 | classic |" in text
    data = json.loads(out.read_text())
    rows = data["split"]
    assert [(r["size"], r["path"]) for r in rows] == [("120x160", "fast"), ("120x160", "classic"),
                                                      ("96x128", "fast"), ("96x128", "classic")]
    for r in rows:
        parts = r["pre_ms"] + r["network_ms"] + r["post_ms"]
        assert 0 < r["network_ms"] and parts <= r["total_ms"] * 1.05 + 0.1, r
        assert r["ratio"] == pytest.approx(r["total_ms"] / r["network_ms"], abs=0.01)
    assert sorted((r["classes"], r["path"]) for r in data["classes"]) == [(19, "classic"), (19, "fast"),
                                                                         (150, "classic"), (150, "fast")]


def test_more_classes_keep_the_real_ones_and_never_win_more() -> None:
    import torch

    from segpp_ros.training.framebench import with_more_classes

    logits = torch.randn(1, 19, 6, 8)
    more = with_more_classes(logits, 150)
    assert more.shape == (1, 150, 6, 8) and torch.equal(more[:, :19], logits)
    assert torch.equal(more.max(1).indices, logits.max(1).indices)     # each copy is lowered by >= 1


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--max-sides", "a"], ["--sizes", "12x12"]])
def test_bad_arguments_are_refused(argv) -> None:
    with pytest.raises(SystemExit):
        framebench.main(argv)


def test_no_timed_rounds_is_refused(capsys) -> None:
    assert framebench.main(["--iters", "0"]) == 2
    assert "--iters must be >= 1" in capsys.readouterr().err
