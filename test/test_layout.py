"""The package's layers: which code needs ROS, which needs torch, and what may import what.

    model  <  inference  <  training | ros  <  cli        (weights/, samples/: package data)

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
    "cli": {"model", "inference", "training", "ros", "cli", "weights", "samples"},
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
            "above = sorted(m for m in sys.modules if m.startswith(('segpp_ros.ros', 'segpp_ros.cli')))\n"
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
