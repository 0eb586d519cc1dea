"""Node parameters: config/segpp.yaml, defaults, merge configurations and live-change validation.

Pure and fast: no ROS node, no DDS (importing segpp_ros.ros.node loads rclpy but starts nothing).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from segpp_ros.model.merge import PRESETS, MergeConfig, StageMerge, TokenMerge, resolve_merge
from segpp_ros.ros.params import (
    ALL_SPECS,
    MERGE_PRESETS,
    SPECS_BY_NAME,
    ParamSpec,
    defaults,
    merge_from,
    render_markdown,
    render_yaml,
    validate_changes,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "segpp.yaml"
REGENERATE = "regenerate with `segpp-params --yaml > config/segpp.yaml` (or `python -m segpp_ros.cli.params --yaml`)"


def _parse_params_file(text: str) -> dict[str, Any]:
    """The ros__parameters of the params file's only node entry."""
    try:
        import yaml
    except ImportError:  # minimal fallback: the generated file has one `    name: value` line per parameter
        import json
        values: dict[str, Any] = {}
        for line in text.splitlines():
            m = re.fullmatch(r" {4}([A-Za-z0-9_.]+): (.+)", line)
            if m:
                values[m.group(1)] = json.loads(m.group(2))  # JSON scalars/lists are YAML too
        return values
    doc = yaml.safe_load(text)
    assert list(doc) == ["/**"], "the params file applies to the node under any name/namespace"
    return doc["/**"]["ros__parameters"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, float):
        return isinstance(a, float) and math.isclose(a, b)
    return type(a) is type(b) and a == b


# -- config/segpp.yaml ------------------------------------------------------------------------------
def test_params_file_is_generated() -> None:
    assert CONFIG.read_text() == render_yaml(), f"config/segpp.yaml is out of date: {REGENERATE}"


def test_params_file_holds_every_default() -> None:
    values = _parse_params_file(CONFIG.read_text())
    assert set(values) == set(SPECS_BY_NAME), REGENERATE
    for spec in ALL_SPECS:
        assert _same(values[spec.name], spec.default), (spec.name, values[spec.name], spec.default)


def test_rendered_yaml_round_trips() -> None:
    values = _parse_params_file(render_yaml())
    assert all(_same(values[s.name], s.default) for s in ALL_SPECS)


def test_markdown_has_a_row_per_parameter() -> None:
    lines = render_markdown().splitlines()
    assert len(lines) == 2 + len(ALL_SPECS)
    for spec, row in zip(ALL_SPECS, lines[2:]):
        assert row.startswith(f"| `{spec.name}` |")
        assert ("| yes |" in row) == spec.read_only


# -- specs --------------------------------------------------------------------------------------------
def test_specs_are_unique_and_described() -> None:
    assert len(SPECS_BY_NAME) == len(ALL_SPECS), "duplicate parameter names"
    for spec in ALL_SPECS:
        assert spec.description.strip(), f"{spec.name} has no description"
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", spec.name), spec.name


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_defaults_validate(spec: ParamSpec) -> None:
    assert spec.validate(spec.default) is None
    if spec.choices:
        assert spec.default in spec.choices
    if spec.low is not None:
        assert spec.low <= spec.default <= spec.high


def test_defaults_build_the_no_merge_configuration() -> None:
    assert merge_from(defaults(), "merge") == resolve_merge("none")
    assert validate_changes(defaults(), {}) is None


def test_one_merge_configuration_parameter_per_model() -> None:
    for prefix in ("merge", "pose.merge"):
        assert {n for n in SPECS_BY_NAME if n.startswith(prefix + ".")} == {
            f"{prefix}.preset", f"{prefix}.budget_ms", f"{prefix}.custom"}
    assert set(MERGE_PRESETS) == {*PRESETS, "custom"}
    assert SPECS_BY_NAME["merge.preset"].choices == MERGE_PRESETS
    # with use_sim_time, what `ros2 param list /segpp` shows: 45 once the per-stage merge parameters
    # became merge.custom; then the compiled backend (2) and depth (6) came
    assert len(ALL_SPECS) + 1 <= 53


# -- merge_from -----------------------------------------------------------------------------------------
CUSTOM = "{stages: [{kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}}, {}, {q: {mode: n2d, cell: [2, 4]}}, {}], downsample: 2}"
CUSTOM_EXPECTED = MergeConfig("custom", (
    StageMerge(q=TokenMerge(), kv=TokenMerge("bsm", 0.6, (2, 2))),
    StageMerge(),
    StageMerge(q=TokenMerge("n2d", 0.0, (2, 4)), kv=TokenMerge()),
    StageMerge(),
), downsample=2)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_maps_to_resolve_merge(preset: str) -> None:
    # merge.custom is ignored unless the preset is 'custom'
    view = {**defaults(), "merge.preset": preset, "merge.custom": CUSTOM}
    assert merge_from(view, "merge") == resolve_merge(preset)


@pytest.mark.parametrize("text", [
    CUSTOM,
    # the same as JSON, and as a YAML block (what a params file holds under `merge.custom: |`)
    '{"stages": [{"kv": {"mode": "bsm", "ratio": 0.6, "cell": [2, 2]}}, {}, {"q": {"mode": "n2d", "cell": [2, 4]}},'
    ' {}], "downsample": 2}',
    "stages:\n  - kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}\n  - {}\n  - q:\n      mode: n2d\n      cell: [2, 4]\n"
    "  - {}\ndownsample: 2\n",
])
def test_custom_builds_the_per_stage_configuration(text: str) -> None:
    got = merge_from({**defaults(), "merge.preset": "custom", "merge.custom": text}, "merge")
    assert got == CUSTOM_EXPECTED
    assert got.stages[0].kv.active and got.stages[2].q.active and not got.is_noop
    assert isinstance(got.stages[0].kv.cell, tuple)


def test_custom_on_a_base_preset_and_the_python_api_schema() -> None:
    got = merge_from({**defaults(), "pose.merge.preset": "custom", "pose.merge.custom": "{preset: hq, downsample: 2}"},
                     "pose.merge")
    assert got.name == "custom" and got.stages == PRESETS["hq"].stages and got.downsample == 2
    # what the Python API writes (MergeConfig.to_dict) is a valid value
    import json

    assert merge_from({**defaults(), "merge.preset": "custom", "merge.custom": json.dumps(CUSTOM_EXPECTED.to_dict())},
                      "merge") == CUSTOM_EXPECTED


def test_custom_with_defaults_is_a_noop() -> None:
    got = merge_from({**defaults(), "merge.preset": "custom"}, "merge")
    assert got.name == "custom" and got.is_noop


# -- validate_changes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,words", [
    ({"merge.preset": "turbo"}, ["merge.preset", *PRESETS, "custom"]),
    ({"merge.custom": "{stages: [{kv: {mode: bsm, ratio: 1.5}}, {}, {}, {}]}"},
     ["merge.custom", "stages[0].kv.ratio", "[0, 1)", "1.5"]),
    ({"merge.custom": "{stages: [{}, {q: {ratio: -0.1}}, {}, {}]}"}, ["merge.custom stages[1].q.ratio"]),
    ({"merge.custom": "{stages: [{}, {}, {}, {kv: {cell: [0, 2]}}]}"}, ["stages[3].kv.cell", "two positive"]),
    ({"merge.custom": "{stages: [{kv: {cell: [2, 2, 2]}}, {}, {}, {}]}"}, ["stages[0].kv.cell"]),
    ({"merge.custom": "{stages: [{kv: {cell: [2.0, 2.0]}}, {}, {}, {}]}"}, ["stages[0].kv.cell"]),
    ({"merge.custom": "{stages: [{kv: {mode: random}}, {}, {}, {}]}"}, ["stages[0].kv.mode", "bsm", "n2d"]),
    ({"merge.custom": "{stages: [{}, {}]}"}, ["merge.custom", "stages", "4 entries"]),
    ({"merge.custom": "{downsample: 0}"}, ["merge.custom", "downsample"]),
    ({"pose.merge.custom": "{stages: [{q: {mode: bsm, speed: 3}}, {}, {}, {}]}"},
     ["pose.merge.custom", "stages[0].q", "unknown keys ['speed']"]),
    ({"merge.custom": "{stages: [{kv: {mode: bsm}"}, ["merge.custom", "is not YAML or JSON", "line 1"]),
    ({"merge.custom": "fast"}, ["merge.custom", "must be a mapping"]),
    ({"merge.custom": 3}, ["merge.custom", "str"]),
    ({"overlay_alpha": 2.0}, ["overlay_alpha"]),
    ({"max_side": "1024"}, ["max_side", "int"]),
    ({"max_side": 10.0}, ["max_side", "int"]),
    ({"max_side": True}, ["max_side", "int"]),
    ({"overlay_alpha": "0.5"}, ["overlay_alpha", "float"]),
    ({"output_resolution": "half"}, ["output_resolution", "input", "network"]),
])
def test_rejects_invalid_values(changes: dict[str, Any], words: list[str]) -> None:
    reason = validate_changes(defaults(), changes)
    assert reason, f"{changes} was accepted"
    for word in words:
        assert word in reason, (word, reason)


@pytest.mark.parametrize("name,value", [
    ("weights", "/tmp/other.safetensors"), ("device", "cpu"), ("variant", "b2"), ("precision", "fp16"),
    ("threads", 2), ("transport", "compressed"), ("pose.own_thread", False), ("warmup_frames", 0),
])
def test_rejects_read_only(name: str, value: Any) -> None:
    assert SPECS_BY_NAME[name].read_only
    reason = validate_changes(defaults(), {name: value})
    assert reason and name in reason and "read-only" in reason


@pytest.mark.parametrize("changes", [
    {},
    {"merge.preset": "hq"},
    *({"merge.preset": p} for p in PRESETS),
    {"merge.preset": "custom", "merge.custom": CUSTOM},
    {"merge.preset": "custom", "merge.custom": "downsample: 2"},
    {"merge.custom": "{stages: [{kv: {mode: bsm, ratio: 0.99}}, {}, {}, {q: {mode: n2d, cell: [1, 1]}}]}"},
    {"pose.merge.preset": "custom", "pose.merge.custom": ""},
    {"max_side": 512, "output_resolution": "network", "overlay_alpha": 0.25},
    {"max_side": 0},
    {"overlay_alpha": 1, "max_frame_age": 0, "no_image_warning": 3},   # ints for float parameters
    {"merge.custom": "{stages: [{}, {q: {mode: bsm, ratio: 0}}, {}, {}]}"},
])
def test_accepts_valid_changes(changes: dict[str, Any]) -> None:
    assert validate_changes(defaults(), changes) is None


def test_custom_values_are_validated_when_set_whatever_the_preset() -> None:
    bad = "{stages: [{kv: {mode: bsm, ratio: 1.0}}, {}, {}, {}]}"
    for preset in ("none", "custom"):
        current = {**defaults(), "merge.preset": preset}
        assert validate_changes(current, {"merge.custom": CUSTOM}) is None
        assert "merge.custom stages[0].kv.ratio" in validate_changes(current, {"merge.custom": bad})


def test_unknown_names_are_left_to_rclpy() -> None:
    assert validate_changes(defaults(), {"use_sim_time": True}) is None
    assert validate_changes(defaults(), {"use_sim_time": "not a bool", "some.other": [1.5]}) is None
    # ours are still checked alongside
    assert "max_side" in validate_changes(defaults(), {"use_sim_time": True, "max_side": "x"})


def test_first_problem_is_reported() -> None:
    reason = validate_changes(defaults(), {"max_side": 512, "device": "cpu"})
    assert reason and "device" in reason and "read-only" in reason


# -- ParameterDescriptor ------------------------------------------------------------------------------
def test_descriptors() -> None:
    from rcl_interfaces.msg import ParameterDescriptor

    from segpp_ros.ros.node import descriptor

    for spec in ALL_SPECS:
        d = descriptor(spec)
        assert isinstance(d, ParameterDescriptor)
        assert d.name == spec.name
        assert d.read_only == spec.read_only
        assert d.description == spec.description
        if spec.choices:            # what `ros2 param describe` shows under Constraints
            assert d.additional_constraints == "one of: " + ", ".join(repr(c) for c in spec.choices)
        else:
            assert d.additional_constraints == spec.constraint
        is_int = isinstance(spec.default, int) and not isinstance(spec.default, bool)
        if spec.low is not None and isinstance(spec.default, float):
            assert len(d.floating_point_range) == 1 and not d.integer_range
            r = d.floating_point_range[0]
            assert (r.from_value, r.to_value, r.step) == (spec.low, spec.high, 0.0)
        elif spec.low is not None and is_int:
            assert len(d.integer_range) == 1 and not d.floating_point_range
            r = d.integer_range[0]
            assert (r.from_value, r.to_value, r.step) == (spec.low, spec.high, 0)
        else:
            assert not d.integer_range and not d.floating_point_range

    # spot checks
    assert descriptor(SPECS_BY_NAME["weights"]).read_only
    assert not descriptor(SPECS_BY_NAME["weights"], read_only=False).read_only     # the managed node's
    assert descriptor(SPECS_BY_NAME["device"]).additional_constraints == "auto, cpu, cuda or cuda:N"
    assert descriptor(SPECS_BY_NAME["merge.custom"]).additional_constraints.startswith("YAML or JSON")
    assert not descriptor(SPECS_BY_NAME["merge.preset"]).read_only
    assert descriptor(SPECS_BY_NAME["overlay_alpha"]).floating_point_range[0].to_value == 1.0
    assert descriptor(SPECS_BY_NAME["max_side"]).integer_range[0].to_value == 8192
