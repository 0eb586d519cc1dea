"""segpp-budget-study: its scoring (which preset made a label, budget against fixed presets),
its plot, and one short run through the real node."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from segpp_ros.harness.budget_study import Label, Phase, Settings, plot
from segpp_ros.training.budget_eval import UNKNOWN, PresetReferences
from segpp_ros.training.data.scenes import render_scene

from .rosgraph import require_isolated_network


def test_labels_are_identified_exactly_and_scored_against_every_fixed_preset():
    scenes = [render_scene(10_000_000 + i, 64, 128) for i in range(2)]
    refs = PresetReferences(scenes, ["none", "downsample"], max_side=128)
    assert not np.array_equal(refs.labels[0]["none"], refs.labels[0]["downsample"])
    assert refs.identify(0, refs.labels[0]["downsample"], "idle") == "downsample"
    assert refs.identify(1, refs.labels[1]["none"], "loaded") == "none"
    noise = np.random.default_rng(0).integers(0, 19, (64, 128)).astype(np.uint8)
    assert refs.identify(0, noise, "idle") == UNKNOWN
    budget, fixed = refs.score.miou("idle")
    assert budget == fixed["downsample"] and fixed["none"] != fixed["downsample"]
    both, fixed_both = refs.score.miou()
    assert set(fixed_both) == {"none", "downsample"} and both == both   # not NaN


def test_plot_draws_both_panels(tmp_path):
    settings = Settings(budget_ms=100.0, phase_s=10.0, phases=2)
    labels = [Label(t / 2, 80.0 + t, 0, "hq" if t < 20 else "downsample", int(t / 2 // 10)) for t in range(40)]
    phases = [Phase(0, False, 20, 0, ""), Phase(1, True, 20, 2, "")]
    path = tmp_path / "plot.png"
    plot(labels, phases, settings, ["none", "hq", "2x2", "fast", "downsample"], path)
    img = cv2.imread(str(path))
    assert img.shape == (640, 1200, 3)
    assert (img[:, :, 2] > 200).sum() > 100 and (img[:, :, 0] < 100).sum() > 100   # budget line, points


@pytest.mark.ros_node
def test_a_short_study_through_the_node(tmp_path):
    require_isolated_network()
    from segpp_ros.cli.budgetstudy import main

    out = tmp_path / "study.json"
    assert main(["--budget", "1000", "--rate", "4", "--phase", "5", "--phases", "2", "--scenes", "1",
                 "--size", "96x128", "--threads", "1", "--json", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    data = json.loads(out.read_text())
    assert [p["loaded"] for p in data["phases"]] == [False, True]
    assert sum(p["frames"] for p in data["phases"]) >= 10
    assert data["labels"] and all(label["preset"] != "?" for label in data["labels"])
    assert data["min_agreement"] == 1.0
    assert set(data["miou"]) == {"idle", "loaded", "all"}
