"""tools/gpu-check --dry-run: every step of the one-shot GPU check, on the CPU at small sizes, so the
script that proves the CUDA path where a GPU is lent cannot rot where none is."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .rosgraph import require_isolated_network

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    require_isolated_network()                       # its last step starts the node for segpp-rosbench
    out = tmp_path / "gpu"
    done = subprocess.run([str(ROOT / "tools" / "gpu-check"), "--dry-run", "--out", str(out)], cwd=ROOT,
                          env={**__import__("os").environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu-check.json").read_text())
    assert result["dry_run"] and result["environment"]["device"] == "cpu"
    assert result["tests"]["exit_code"] == 0 and "passed" in result["tests"]["summary"]
    graphs = result["graphs"]
    assert graphs["concurrency"]["ok"] and graphs["concurrency"]["errors"] == [], graphs["concurrency"]
    assert graphs["concurrency"]["captures"]["seg"] > 0 and graphs["concurrency"]["captures"]["pose"] > 0
    assert graphs["ownership"]["ok"] and graphs["capture_count"]["frames"] > 0
    # few keys: 1-4 cameras and 0-8 persons in three presets need far fewer graphs than batches met
    counted = graphs["capture_count"]
    assert 0 < counted["captures"] <= counted["distinct_batches_met"]
    assert counted["captures"] == counted["graphs_kept"]          # nothing evicted and captured again
    assert graphs["tf32"] == {"skipped": "TF32 is a CUDA notion"}
    strategies = {r["strategy"] for r in result["bench"]}
    assert strategies == {"none", "hq", "fast", "2x2", "downsample"}
    assert any(r["e2e_ms"] for r in result["bench"]) and any(r["batch"] == 2 for r in result["bench"])
    split = result["split"][0]
    assert split["pre_ms"] > 0 and split["network_ms"] > 0 and split["post_ms"] > 0
    assert {r["preset"] for r in result["pose"]} == {"none", "hq", "2x2"}
    assert result["ros"]["exit_code"] == 0, result["ros"]["output"][-3000:]
    report = (out / "report.md").read_text()
    for section in ("## Environment", "## test/test_cuda.py", "## CUDA graph checks", "## segpp-bench",
                    "## Segmenter time per frame",
                    "## segpp-posebench", "## segpp-rosbench"):
        assert section in report, section
