"""The package's layers: which code needs ROS, which needs torch, and what may import what.

    model  <  inference  <  training | ros  <  bags | harness  <  cli     (weights/, samples/: package data)

and more: no import cycle between modules; segpp_ros/ros holds only the node's runtime (the
measuring tools live in harness/); the node and segpp-bag run frames through the one frame
pipeline (segpp_ros.inference.pipeline) and do none of its steps themselves.

Checked two ways: statically, every import statement of every module (those inside functions
included) against the layer table; and dynamically, by importing every module of the ROS-free
layers in a fresh interpreter and looking for ROS modules in sys.modules.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segpp_ros"

# layer -> the segpp_ros layers it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "inference": {"model", "inference", "weights"},
    "training": {"model", "inference", "training", "weights"},
    "ros": {"model", "inference", "ros", "weights"},
    "bags": {"model", "inference", "ros", "bags", "weights"},
    "harness": {"model", "inference", "ros", "harness", "weights"},
    "cli": {"model", "inference", "training", "ros", "bags", "harness", "cli", "weights", "samples"},
    "weights": {"weights"},
    "samples": {"samples"},
}
ROS_FREE = ("model", "inference", "training")
# top-level modules that only exist with ROS (the rclpy stack, message packages, ament, launch)
ROS_MODULES = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rpyutils", "sensor_msgs",
               "std_msgs", "builtin_interfaces", "diagnostic_msgs", "visualization_msgs", "geometry_msgs",
               "segpp", "ament_index_python", "launch", "launch_ros", "rmw_implementation"}


def _layer(module: str) -> str:
    """'segpp_ros.ros.node' -> 'ros'; the top-level package itself is its own root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved (module: the
    file's dotted name, by default from its place in the checkout)."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from .. import ros`: the imported name may be the submodule that decides the layer
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_layer_has_a_docstring_saying_what_it_holds() -> None:
    for layer in ALLOWED:
        init = PACKAGE / layer / "__init__.py"
        assert init.is_file(), f"segpp_ros/{layer} is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, f"segpp_ros/{layer}/__init__.py needs a docstring saying what it holds"


def test_no_module_outside_a_layer() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules directly under segpp_ros/ belong in a layer: {loose}"


def test_imports_follow_the_layers() -> None:
    wrong = []
    for path in _modules():
        layer = _layer(_module_name(path))
        for line, target in _imports(path):
            if target.split(".")[0] == "segpp_ros" and target != "segpp_ros":
                if layer == "root":
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
                elif _layer(target) not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {target} ({_layer(target)})")
            elif layer in ROS_FREE and target.split(".")[0] in ROS_MODULES:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports the ROS module {target}")
    assert wrong == [], "layer violations:\n" + "\n".join(wrong)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path) -> None:
    """The static check must catch what the layers forbid even inside a function."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from ..ros import node\n    from ..ros.params import ParamSpec\n"
                    "    import rclpy\n")
    found = {target for _, target in _imports(fake, "segpp_ros.training.probe")}
    assert found == {"segpp_ros.ros.node", "segpp_ros.ros.params.ParamSpec", "rclpy"}


@pytest.mark.parametrize("layer", ROS_FREE)
def test_ros_free_layers_load_no_ros_in_a_fresh_interpreter(layer) -> None:
    modules = [_module_name(p) for p in (PACKAGE / layer).rglob("*.py")]
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            f"ros = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(ROS_MODULES)!r})\n"
            "above = sorted(m for m in sys.modules if m.startswith(('segpp_ros.ros', 'segpp_ros.bags', "
            "'segpp_ros.harness', 'segpp_ros.cli')))\n"
            "print(json.dumps([ros, above]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ros, above = json.loads(result.stdout.strip().splitlines()[-1])
    assert ros == [], f"importing segpp_ros.{layer} loaded ROS modules: {ros}"
    assert above == [], f"importing segpp_ros.{layer} loaded modules of higher layers: {above}"


def test_importing_the_ros_layer_package_starts_no_rclpy() -> None:
    code = ("import sys, segpp_ros.ros, segpp_ros.ros.params, segpp_ros.ros.realtime, segpp_ros.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


# -- the shape of the house ---------------------------------------------------------------------------
# segpp_ros/ros is the node's runtime and nothing else: a new module there is a decision, made here
NODE_RUNTIME = {"__init__", "node", "lifecycle", "process", "pose_stage", "cameras", "params", "conversions", "qos",
                "camera_info", "vision", "logs", "depth",
                "keypoint_msgs", "realtime", "health", "spin", "env"}
# what the frame pipeline does; its adapters (the node, segpp-bag) call the pipeline, never these
PIPELINE_STEPS = {"person_boxes", "whole_frame_box", "draw_skeletons", "upsampled_argmax", "MergeBudget"}
ADAPTERS = ("ros", "bags")


def _module_graph() -> dict[str, set[str]]:
    """Module -> the segpp_ros modules it imports (lazy imports included; a name imported from
    a package counts as the package when it is not a submodule)."""
    modules = {_module_name(p): p for p in _modules()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, target in _imports(path, name):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("segpp_ros."):
                targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    cycles = _cycles(_module_graph())
    assert cycles == [], "modules that import each other (directly or round about): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_ros_holds_only_the_node_runtime() -> None:
    found = {p.stem for p in (PACKAGE / "ros").glob("*.py")}
    assert found == NODE_RUNTIME, (
        f"segpp_ros/ros is the node's runtime; not expected there: {sorted(found - NODE_RUNTIME)} (a measuring or "
        f"test tool belongs in segpp_ros/harness), missing: {sorted(NODE_RUNTIME - found)}")
    # and nothing of the node's runtime reaches for a measuring tool
    for path in (PACKAGE / "ros").glob("*.py"):
        assert not [t for _, t in _imports(path) if _layer(t) == "harness"], path.name


def _names_used(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.rpartition(".")[2])
    return names


def test_node_and_bag_share_the_frame_pipeline() -> None:
    users = {}
    for layer in ADAPTERS:
        for path in sorted((PACKAGE / layer).glob("*.py")):
            used = _names_used(path)
            steps = sorted(used & PIPELINE_STEPS)
            assert not steps, (f"{path.relative_to(ROOT)} does a step of the frame pipeline itself ({steps}): call "
                               "segpp_ros.inference.pipeline.FramePipeline instead, so the node and segpp-bag share it")
            if "FramePipeline" in used:
                users[path.relative_to(PACKAGE).as_posix()] = path
    assert {"ros/node.py", "bags/runner.py"} <= set(users), sorted(users)
