"""Every node parameter, declared once: name, default, description, limits, reload policy.

No rclpy here: the node turns these into ParameterDescriptors, segpp-params renders them as
config/segpp.yaml and the docs/parameters.md tables, the tests check both against them, and validation
runs here without side effects.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Callable, Sequence

import yaml

from ..inference.budget import POSE_LADDER, SEG_LADDER
from ..inference.compiled import BACKENDS
from ..inference.pipeline import BOX_SOURCES, FrameSettings, PoseSettings
from ..inference.timing import markdown_table
from ..model.merge import PRESETS, MergeConfig, resolve_merge
from .cameras import check_camera_names

Value = bool | int | float | str | list[int] | list[str]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. read_only: changing it needs a reload (set it at start).

    choices restricts strings; low/high bound numbers (inclusive); check returns a reason
    string for an invalid value, worded to follow the parameter's name (None when valid), and
    constraint says in words what check accepts (ROS's additional_constraints).
    """

    name: str
    default: Value
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    check: Callable[[Any], str | None] | None = None
    constraint: str = ""
    items: type = int  # the element type of a list parameter

    @property
    def is_list(self) -> bool:
        return isinstance(self.default, list)

    def validate(self, value: Any) -> str | None:
        """None when value is acceptable, else the reason (names the parameter and the fix)."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, self.items) and not isinstance(v, bool)
                                                               for v in value):
                what = "integers" if self.items is int else "strings"
                return f"{self.name} must be a list of {what}, got {value!r}"
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{self.name} must be a {kind.__name__}, got {value!r} ({type(value).__name__})"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return f"{self.name} must be in [{self.low:g}, {self.high:g}]; got {value!r}"
        reason = self.check(value) if self.check else None
        return f"{self.name} {reason}" if reason else None


def _device(value: str) -> str | None:
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        return None
    return f"must be auto, cpu, cuda or cuda:N; got {value!r}"


MERGE_PRESETS: tuple[str, ...] = (*PRESETS, "custom")
CUSTOM_EXAMPLE = "{stages: [{kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}}, {}, {q: {mode: n2d, cell: [2, 2]}}, {}]}"


def parse_custom(text: str) -> MergeConfig:
    """A ``<prefix>.custom`` value (YAML or JSON, the schema ``resolve_merge`` takes) as a
    MergeConfig named 'custom'; empty: no merging. Raises ValueError naming the field."""
    if not text.strip():
        return MergeConfig("custom", PRESETS["none"].stages)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"is not YAML or JSON{at}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"must be a mapping such as {CUSTOM_EXAMPLE}, got {config!r}")
    return replace(resolve_merge(config), name="custom")


def _custom(text: str) -> str | None:
    try:
        parse_custom(text)
    except ValueError as err:
        return str(err)
    return None


def merge_specs(prefix: str, what: str, ladder: Sequence[str]) -> list[ParamSpec]:
    """The merge parameters of one model under ``prefix`` (e.g. 'merge', 'pose.merge').

    ``<prefix>.preset`` picks a preset; with 'custom' the configuration in ``<prefix>.custom``
    applies; ``<prefix>.budget_ms`` lets a latency budget pick from ``ladder`` per frame.
    """
    return [
        ParamSpec(f"{prefix}.preset", "none",
                  f"token merging of the {what} model: a preset, or 'custom' for the configuration in "
                  f"{prefix}.custom; takes effect on the next frame", choices=MERGE_PRESETS),
        ParamSpec(f"{prefix}.budget_ms", 0.0,
                  f"latency budget of the {what} model per frame in ms; > 0: each frame runs the most accurate "
                  f"merge setting predicted to fit, from {prefix}.preset down the ladder "
                  f"{', '.join(ladder)}, predicted from the node's own measured times; 0: off, "
                  f"{prefix}.preset always", low=0.0, high=60_000.0),
        ParamSpec(f"{prefix}.custom", "", f"the {what} model's merging with {prefix}.preset 'custom', as YAML or "
                  "JSON in the Python API's schema: stages (4 entries of q and kv, each mode none/bsm/n2d, ratio, "
                  f"cell [sy, sx]), downsample, and an optional base preset; e.g. {CUSTOM_EXAMPLE}; empty: no "
                  "merging", check=_custom, constraint="YAML or JSON: {stages: [4 x {q: {mode, ratio, cell}, "
                  "kv: {...}}], downsample: N, preset: P}"),
    ]


def merge_from(values: Mapping[str, Any], prefix: str) -> MergeConfig:
    """The MergeConfig named by a parameter view (raises ValueError with the reason)."""
    preset = values[f"{prefix}.preset"]
    if preset != "custom":
        return resolve_merge(preset)
    try:
        return parse_custom(values[f"{prefix}.custom"])
    except ValueError as err:
        raise ValueError(f"{prefix}.custom {err}") from None


SEGMENTATION_SPECS: list[ParamSpec] = [
    ParamSpec("weights", "", "segmentation weights: our .safetensors, a SegFormer++/mmseg or NVlabs .pth, a "
              "Hugging Face folder, or a Hugging Face model ID owner/name[@revision] (from the huggingface_hub "
              "cache, downloaded when online); empty = the embedded default model", read_only=True),
    ParamSpec("variant", "", "expected MiT variant (b0..b5); empty accepts what the weights hold, otherwise a "
              "mismatch stops the node at start", read_only=True, choices=("", "b0", "b1", "b2", "b3", "b4", "b5")),
    ParamSpec("device", "auto", "auto (first CUDA device, else CPU), cpu, cuda or cuda:N", read_only=True,
              check=_device, constraint="auto, cpu, cuda or cuda:N"),
    ParamSpec("precision", "auto", "network precision: auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16, bf16 "
              "(GPUs that support it; on the CPU fp16 is slower than fp32, bf16 faster where the CPU has "
              "bf16 instructions; backend openvino: fp32 or bf16)", read_only=True,
              choices=("auto", "fp32", "fp16", "bf16")),
    ParamSpec("cuda_graphs", True, "on CUDA, replay the forward pass as a CUDA graph per input size and merge "
              "configuration (captured between frames; a case that cannot be captured runs eagerly, logged)",
              read_only=True),
    ParamSpec("backend", "auto", "inference engine: auto (openvino on the CPU, torch on CUDA), torch (PyTorch, "
              "eager), openvino (the CPU only: the models compiled by OpenVINO, one per input size and merge "
              "configuration, in the background while the first frames of a new one run in PyTorch; kept on "
              "disk, so a restart compiles nothing again), inductor (torch.compile: one compiled function per "
              "merge configuration, compiled on the first frame of each input size; on CUDA with inductor's CUDA "
              "graphs; measured by tools/gpu-check)", read_only=True, choices=BACKENDS),
    ParamSpec("backend_precompile", True, "with backend openvino and a latency budget: the first frame of a "
              "new input size queues every step of the merge ladder for compilation, so the budget's switches "
              "find them compiled"),
    ParamSpec("threads", 0, "CPU threads for inference (0: PyTorch's default)", read_only=True, low=0, high=256),
    ParamSpec("max_input_pixels", 4096 * 4096, "images with more pixels are refused as bad input before "
              "anything of their size is allocated (compressed ones from their PNG/JPEG header); bounds the "
              "memory one message can take", low=64 * 64, high=8192 * 8192),
    ParamSpec("max_side", 1024, "network input size: the image is scaled so its longer side is at most this "
              "(0: the image's own size)", low=0, high=8192),
    ParamSpec("output_resolution", "input", "~/label and ~/color size: 'input' (the image's, logits resized "
              "before the argmax) or 'network'", choices=("input", "network")),
    ParamSpec("overlay_alpha", 0.5, "weight of the colour mask in ~/overlay", low=0.0, high=1.0),
    *merge_specs("merge", "segmentation", SEG_LADDER),
]

def _class_list(value: str) -> str | None:
    if not [c for c in value.split(",") if c.strip()]:
        return "must name at least one class (names or IDs, comma-separated), e.g. 'person,rider'"
    return None


POSE_SPECS: list[ParamSpec] = [
    ParamSpec("pose.enable", True, "human keypoints on ~/keypoints (top-down: a pose forward per person box); "
              "switchable live, the pose model loads on first use"),
    ParamSpec("pose.weights", "", "pose weights: our .safetensors or an mmpose .pth with a heatmap head; empty = "
              "the embedded COCO-17 model", read_only=True),
    ParamSpec("pose.box_source", "segmentation", "where person boxes come from: 'segmentation' (connected "
              "components of the person classes in the label image), 'whole_frame' (one person filling "
              "the image, e.g. a pre-cropped camera) or 'detections' (a detector's vision_msgs/Detection2DArray "
              "on detections, paired by stamp; frames without any get the segmentation's boxes)",
              choices=BOX_SOURCES),
    ParamSpec("pose.detection_classes", "person,0", "box_source detections: the detector's class ids that are "
              "persons, comma-separated (names or numbers as the detector writes them: 'person' for most, '0' "
              "for YOLO's COCO-80 ids; add '1' for COCO-91 ids)", check=_class_list,
              constraint="class ids, comma-separated, at least one"),
    ParamSpec("pose.detections_wait_ms", 100.0, "box_source detections: how long a frame waits for the "
              "detections with its stamp before it takes the segmentation's boxes (counted)", low=0.0,
              high=5000.0),
    ParamSpec("pose.track_max_missed", 30, "a person's track id survives this many frames without the person "
              "(hidden behind someone, out of view and back), then a new person gets a new id", low=0,
              high=100_000),
    ParamSpec("pose.person_classes", "person,rider", "segmentation classes that are persons: names (from "
              "~/label_info) or class IDs, comma-separated", read_only=True, check=_class_list,
              constraint="class names or IDs, comma-separated, at least one"),
    ParamSpec("pose.padding", 1.25, "box enlargement of each person crop (1.25: the box plus a quarter)",
              low=1.0, high=3.0),
    ParamSpec("pose.min_box_area", 400, "person components smaller than this many image pixels are ignored",
              low=0, high=10_000_000),
    ParamSpec("pose.merge_gap", 0.0, "person components whose boxes are at most this many image pixels apart "
              "are one person (0: overlapping or touching boxes; negative: never merge)", low=-1.0, high=10_000.0),
    ParamSpec("pose.max_persons", 8, "at most this many persons per frame, largest first (one batched forward)",
              low=1, high=64),
    # 0.15: on held-out crops the embedded model keeps 80% of the joints, 71% of them within PCK@0.1
    ParamSpec("pose.score_threshold", 0.15, "keypoints below this score are not drawn (overlay, ~/markers); "
              "~/keypoints always carries all of them with their scores", low=0.0, high=1.0),
    ParamSpec("pose.flip_test", False, "also run the mirrored crops and average (more accurate, twice the "
              "pose cost)"),
    ParamSpec("pose.draw_overlay", True, "draw skeletons on ~/overlay"),
    ParamSpec("pose.own_thread", True, "keypoints on a thread of their own, overlapping the next frame's "
              "segmentation (more frames per second where cores or a GPU are spare); false: on the "
              "segmentation thread, before it takes the next frame (lowest label latency on a small CPU)",
              read_only=True),
    ParamSpec("pose.marker_scale", 0.001, "~/markers: metres per image pixel (markers lie in the image's "
              "frame_id, x right, y down, z = 0)", low=1e-6, high=1.0),
    *merge_specs("pose.merge", "pose", POSE_LADDER),
]

NODE_SPECS: list[ParamSpec] = [
    ParamSpec("cameras", [], "several cameras through one model: names, e.g. [front, rear]; each subscribes "
              "<name>/image (or <name>/image/compressed) and publishes ~/<name>/label, ~/<name>/keypoints, ...; "
              "empty: one camera on image and ~/label, ...", read_only=True, items=str, check=check_camera_names,
              constraint="names of letters, digits and underscores, starting with a letter; no name twice"),
    ParamSpec("batch_window_ms", 0.0, "with several cameras, how long a frame may wait for the frames of the "
              "other cameras due by then, so they share one forward pass (0: take what is waiting); a slow "
              "or stopped camera is not waited for", low=0.0, high=1000.0),
    ParamSpec("batch_max", 8, "with several cameras, at most this many frames per forward pass (1: one "
              "camera at a time)", low=1, high=64),
    ParamSpec("transport", "raw", "input transport: 'raw' subscribes image (sensor_msgs/Image), 'compressed' "
              "subscribes image/compressed (sensor_msgs/CompressedImage)", read_only=True, choices=("raw", "compressed")),
    ParamSpec("max_frame_age", 0.0, "opt-in: drop frames whose header stamp is older than this many seconds "
              "by the node's clock, and count them (0: never; a replayed bag, a camera on another clock or sim "
              "time on one side only would lose every frame)", low=0.0, high=3600.0),
    ParamSpec("stamp_skew_warning", 1.0, "warn on /diagnostics when a header stamp is further than this many "
              "seconds from the node's clock, either way (0: never); the frame is segmented anyway",
              low=0.0, high=1e9),
    ParamSpec("warmup_frames", 2, "forward passes before subscribing, so the first frame is not slow",
              read_only=True, low=0, high=100),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", read_only=True,
              low=0.1, high=60.0),
    ParamSpec("no_image_warning", 5.0, "warn when no image arrived for this many seconds (0: never)",
              low=0.0, high=3600.0),
]

DEPTH_SPECS: list[ParamSpec] = [
    ParamSpec("depth.enable", False, "subscribe depth (an aligned depth image: 16UC1 millimetres or 32FC1 metres) "
              "and its camera_info, and publish ~/keypoints_3d, ~/markers_3d and ~/points in the depth camera's "
              "frame", read_only=True),
    ParamSpec("depth.max_skew_ms", 20.0, "a frame is paired with the depth image nearest its stamp within this "
              "many milliseconds; a frame without one keeps its 2-D outputs (counted: depth_missing)",
              low=0.0, high=1000.0),
    ParamSpec("points.stride", 4, "~/points: every Nth depth pixel in both directions", low=1, high=64),
    ParamSpec("points.max_range_m", 10.0, "~/points: only points at most this far (metres along the optical "
              "axis)", low=0.01, high=1000.0),
    ParamSpec("points.classes", "", "~/points: only these classes, names or IDs, comma-separated (empty: all)"),
    ParamSpec("points.color", False, "~/points: add each point's class colour as the field rgb"),
]

ALL_SPECS: list[ParamSpec] = [*NODE_SPECS, *SEGMENTATION_SPECS, *POSE_SPECS, *DEPTH_SPECS]
SPECS_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in ALL_SPECS}


def defaults(specs: Sequence[ParamSpec] = ALL_SPECS) -> dict[str, Value]:
    return {s.name: s.default for s in specs}


def validate_changes(current: Mapping[str, Any], changes: Mapping[str, Any],
                     specs: Mapping[str, ParamSpec] = SPECS_BY_NAME, reload_allowed: bool = False) -> str | None:
    """Why a set of changes must be rejected (None: accept). Checks each value, read-only
    parameters (allowed with ``reload_allowed``: the managed node while unconfigured), and that
    the merge configurations they lead to can be built."""
    for name, value in changes.items():
        spec = specs.get(name)
        if spec is None:
            continue  # not ours (e.g. use_sim_time): rclpy handles it
        if spec.read_only and not reload_allowed:
            return (f"{name} is read-only (it needs a reload): set it at start with --ros-args -p {name}:=..., "
                    "or, on the managed node (lifecycle:=true), while it is unconfigured")
        reason = spec.validate(value)
        if reason:
            return reason
    view = {**current, **changes}
    for prefix in {n.rsplit(".preset", 1)[0] for n in specs if n.endswith(".preset")}:
        try:
            merge_from(view, prefix)
        except ValueError as err:
            return f"{prefix}: {err}"
    return None


# ROS's own parameters, which a params file may set for any node
ROS_PARAMETERS = re.compile(r"use_sim_time|qos_overrides\..*|start_type_description_service")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys (as `ros2 param dump` writes them) joined with dots."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _applies_to(entry: str, node: str) -> bool:
    """Whether a params file entry ('/**', 'segpp', '/robot/segpp', '/**/segpp', ...) names the node."""
    entry = entry.strip("/")
    return entry in ("**", node) or entry.endswith("/" + node) or entry in ("*",)


def read_params_file(path: Any, node: str = "segpp") -> dict[str, Any]:
    """The segpp parameters a ROS 2 params file gives a node named ``node`` (in any namespace):
    its matching entries in file order (a later one wins, as in rcl), nested names joined with
    dots, each value checked against its spec. Raises ValueError naming the file and the problem
    (an unknown name, a bad value, no entry for the node)."""
    from pathlib import Path

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the params file {path}: {err}") from None
    entries = [v["ros__parameters"] for k, v in (doc or {}).items()
               if _applies_to(str(k), node) and isinstance(v, Mapping) and isinstance(v.get("ros__parameters"), Mapping)]
    if not entries:
        raise ValueError(f"the params file {path} has no entry for the node '{node}' (such as '/**:' or "
                         f"'{node}:' with 'ros__parameters:')")
    values: dict[str, Any] = {}
    for entry in entries:
        values.update(_flatten(entry))
    ours = {}
    for name, value in values.items():
        spec = SPECS_BY_NAME.get(name)
        if spec is None:
            if not ROS_PARAMETERS.fullmatch(name):
                raise ValueError(f"the params file {path} sets '{name}', which the segpp node does not have "
                                 "(segpp-params --yaml lists them all)")
            continue
        value = float(value) if isinstance(spec.default, float) and isinstance(value, int) \
            and not isinstance(value, bool) else value
        reason = spec.validate(value)
        if reason:
            raise ValueError(f"the params file {path}: {reason}")
        ours[name] = value
    return ours


# -- the params file and the docs/parameters.md table (segpp-params) ---------------------------------------------
HEADER = """\
# Every parameter of the segpp node with its default (generated by `segpp-params --yaml`;
# a test keeps this file and the node in step). Read-only parameters need a restart; the
# others can be changed live with `ros2 param set /segpp <name> <value>`.
"""


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid YAML scalar, quoted
    return json.dumps(value) if isinstance(value, list) else repr(value)


def render_yaml(specs: list[ParamSpec] = ALL_SPECS, node: str = "segpp") -> str:
    """A ROS 2 params file: /**: so it applies to the node under any namespace or name."""
    lines = [HEADER.rstrip("\n"), "/**:", "  ros__parameters:"]
    for spec in specs:
        note = " (read-only)" if spec.read_only else ""
        lines.append(f"    # {spec.description}{note}")
        lines.append(f"    {spec.name}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"


def render_markdown(specs: list[ParamSpec] = ALL_SPECS) -> str:
    rows = []
    for s in specs:
        limits = ", ".join(s.choices) if s.choices else (f"{s.low:g} .. {s.high:g}" if s.low is not None else "")
        rows.append([f"`{s.name}`", f"`{_yaml_value(s.default)}`", "yes" if s.read_only else "", limits,
                     s.description])
    return markdown_table(["parameter", "default", "read-only", "values", "meaning"], rows)


def _names_merge(changes: Mapping[str, Any], prefix: str) -> bool:
    """Whether ``changes`` touch the merge configuration under ``prefix`` (its budget does not)."""
    return any(k.startswith(prefix + ".") and k != f"{prefix}.budget_ms" for k in changes)


def frame_settings(values: Mapping[str, Any], merge: MergeConfig, pose_merge: MergeConfig) -> FrameSettings:
    """What the frame pipeline runs with, from a parameter view and its merge configurations."""
    return FrameSettings(
        max_side=values["max_side"] or None, output_resolution=values["output_resolution"],
        overlay_alpha=values["overlay_alpha"], merge=merge, budget_ms=values["merge.budget_ms"],
        precompile=values["backend_precompile"],
        pose=PoseSettings(
            enable=values["pose.enable"], box_source=values["pose.box_source"],
            min_box_area=values["pose.min_box_area"], merge_gap=values["pose.merge_gap"],
            max_persons=values["pose.max_persons"], padding=values["pose.padding"],
            flip_test=values["pose.flip_test"], merge=pose_merge, budget_ms=values["pose.merge.budget_ms"],
            score_threshold=values["pose.score_threshold"], draw_overlay=values["pose.draw_overlay"],
            track_max_missed=values["pose.track_max_missed"]))


@dataclass(frozen=True, eq=False)
class Snapshot(Mapping):
    """One consistent view of every parameter (read-only), with the frame pipeline's settings it
    names (``frame``, holding both merge configurations). The node replaces its snapshot as a
    whole when parameters change, and each frame reads one snapshot: no frame sees half of a
    multi-parameter change, and the pipeline applies a merge change by noticing a new merge
    object, with nothing handed over that could be lost.
    """

    params: Mapping[str, Any]
    frame: FrameSettings

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Snapshot:
        """Raises ValueError when a merge configuration cannot be built from the values."""
        frozen = MappingProxyType(dict(values))
        return cls(frozen, frame_settings(frozen, merge_from(frozen, "merge"), merge_from(frozen, "pose.merge")))

    @property
    def merge(self) -> MergeConfig:
        return self.frame.merge

    @property
    def pose_merge(self) -> MergeConfig:
        return self.frame.pose.merge

    def changed(self, changes: Mapping[str, Any]) -> Snapshot:
        """A new snapshot with ``changes`` applied; the merge objects are kept when unchanged."""
        values = MappingProxyType({**self.params, **changes})
        merge = merge_from(values, "merge") if _names_merge(changes, "merge") else self.merge
        pose_merge = merge_from(values, "pose.merge") if _names_merge(changes, "pose.merge") else self.pose_merge
        return Snapshot(values, frame_settings(values, merge, pose_merge))

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)
