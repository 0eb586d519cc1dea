"""launch/segpp.launch.py agrees with the package, the node and the install rules.

launch and launch_ros are not on PyPI, so the launch file is checked statically (ast). Where
they are importable (a ROS install), generate_launch_description() is also run.
"""
from __future__ import annotations

import ast
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from segpp_ros.ros.params import SPECS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "segpp.launch.py"
CMAKE = ROOT / "CMakeLists.txt"
NODE_PY = ROOT / "segpp_ros" / "ros" / "node.py"


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id
        if isinstance(f, ast.Attribute):
            return f.attr
    return None


class LaunchFile:
    """What the launch file says, read from its syntax tree (module constants resolved)."""

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text(), str(path))
        self.constants: dict[str, Any] = {}
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                try:
                    self.constants[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                except ValueError:
                    pass
        self.calls = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call)]
        # local assignments inside functions (e.g. default_params = os.path.join(...))
        self.locals = {n.targets[0].id: n.value for n in ast.walk(self.tree)
                       if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}

    def value(self, node: ast.AST) -> Any:
        """A literal, or a module constant named by the expression."""
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return self.constants[node.id]
            raise KeyError(f"{node.id} is not a module-level constant of the launch file")
        return ast.literal_eval(node)

    def calls_of(self, name: str) -> list[ast.Call]:
        return [c for c in self.calls if _call_name(c) == name]

    def node(self) -> ast.Call:
        """The node's keyword arguments, as the dict(...) both actions (Node, LifecycleNode) unpack."""
        # the segpp node's actions: not RViz2's (a Node whose package is named in the call)
        nodes = [c for c in self.calls_of("Node")
                 if not any(kw.arg == "package" and self.value(kw.value) == "rviz2" for kw in c.keywords)]
        managed = self.calls_of("LifecycleNode")
        assert len(nodes) == 1 and len(managed) == 1, "the launch file starts one Node or one LifecycleNode"
        unpacked = {kw.value.id for call in (*nodes, *managed) for kw in call.keywords
                    if kw.arg is None and isinstance(kw.value, ast.Name)}
        assert len(unpacked) == 1, "both actions take the same keyword arguments"
        kwargs = self.locals[unpacked.pop()]
        assert _call_name(kwargs) == "dict", ast.unparse(kwargs)
        return kwargs

    def keyword(self, call: ast.Call, name: str) -> ast.AST:
        for kw in call.keywords:
            if kw.arg == name:
                return kw.value
        raise KeyError(f"{_call_name(call)}(...) has no {name}=")

    def launch_arguments(self) -> dict[str, ast.Call]:
        """Declared launch argument names -> their DeclareLaunchArgument call."""
        found: dict[str, ast.Call] = {}
        for comp in ast.walk(self.tree):
            if isinstance(comp, (ast.ListComp, ast.GeneratorExp)) and _call_name(comp.elt) == "DeclareLaunchArgument":
                (gen,) = comp.generators
                it = gen.iter
                # for name, text in PARAMETER_ARGUMENTS.items() / for name in PARAMETER_ARGUMENTS
                if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute):
                    it = it.func.value
                for name in self.value(it):
                    found[name] = comp.elt
        for call in self.calls_of("DeclareLaunchArgument"):
            first = call.args[0] if call.args else self.keyword(call, "name")
            if isinstance(first, ast.Constant):
                found[first.value] = call
        return found

    def share_path(self, node: ast.AST) -> tuple[str, str]:
        """(package, relative path) of os.path.join(get_package_share_directory(P), ...)."""
        if isinstance(node, ast.Name):
            node = self.locals[node.id]
        assert _call_name(node) == "join", ast.unparse(node)
        first, *rest = node.args
        assert _call_name(first) == "get_package_share_directory", ast.unparse(node)
        return self.value(first.args[0]), "/".join(self.value(a) for a in rest)


@pytest.fixture(scope="module")
def launch() -> LaunchFile:
    return LaunchFile(LAUNCH)


def _launch_config_name(node: ast.AST) -> str | None:
    if _call_name(node) == "LaunchConfiguration" and isinstance(node.args[0], ast.Constant):
        return node.args[0].value
    return None


def test_package(launch: LaunchFile) -> None:
    name = ET.parse(ROOT / "package.xml").getroot().findtext("name")
    assert launch.constants["PACKAGE"] == "segpp" == name
    assert launch.value(launch.keyword(launch.node(), "package")) == name


def test_executable_is_installed(launch: LaunchFile) -> None:
    executable = launch.value(launch.keyword(launch.node(), "executable"))
    assert executable == "segpp_node"
    cmake = CMAKE.read_text()
    assert re.search(rf"project\(\s*{launch.constants['PACKAGE']}\s*\)", cmake)
    m = re.search(rf"configure_file\(\s*scripts/{executable}\.in\s+(\S+)", cmake)
    assert m, f"CMakeLists.txt does not configure scripts/{executable}.in"
    assert m.group(1).endswith(f"/{executable}")
    assert re.search(rf"install\(\s*PROGRAMS\s+{re.escape(m.group(1))}\s+DESTINATION\s+lib/\$\{{PROJECT_NAME\}}\s*\)",
                     cmake), f"{executable} is not installed into lib/${{PROJECT_NAME}} (ros2 run / launch_ros)"
    script = (ROOT / "scripts" / f"{executable}.in").read_text()
    assert script.startswith("#!@Python3_EXECUTABLE@\n")
    assert "from segpp_ros.cli.node import main" in script


def test_node_name(launch: LaunchFile) -> None:
    from segpp_ros.ros.node import NODE_NAME

    assert launch.value(launch.keyword(launch.node(), "name")) == NODE_NAME
    assert launch.constants["NODE_NAME"] == NODE_NAME


def test_default_params_file(launch: LaunchFile) -> None:
    args = launch.launch_arguments()
    default = launch.keyword(args["params_file"], "default_value")
    assert launch.share_path(default) == ("segpp", "config/segpp.yaml")
    assert (ROOT / "config" / "segpp.yaml").is_file()
    assert re.search(r"install\(\s*DIRECTORY\s+launch\s+config\s+DESTINATION\s+share/\$\{PROJECT_NAME\}\s*\)",
                     CMAKE.read_text()), "launch/ and config/ must be installed into share/${PROJECT_NAME}"
    # the node gets the params file first, the launch-argument overrides after it
    params = launch.keyword(launch.node(), "parameters")
    assert isinstance(params, ast.List) and _launch_config_name(params.elts[0]) == "params_file"


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed (no ROS)")
@pytest.mark.parametrize("arguments, expected", [
    ({"image": "/camera/image_raw"}, [("image", "/camera/image_raw"), ("image/compressed", "/camera/image_raw/compressed")]),
    ({"image": "/cam/x", "camera_info": "/cam/calib", "detections": "/yolo/detections"},
     [("image", "/cam/x"), ("image/compressed", "/cam/x/compressed"), ("camera_info", "/cam/calib"),
      ("detections", "/yolo/detections")]),
    ({"image": "/rs/color", "depth": "/rs/aligned_depth_to_color/image_raw", "depth_camera_info": "/rs/d_info"},
     [("image", "/rs/color"), ("image/compressed", "/rs/color/compressed"),
      ("depth", "/rs/aligned_depth_to_color/image_raw"), ("depth_camera_info", "/rs/d_info")]),
])
def test_remappings_are_the_node_inputs(arguments, expected) -> None:
    """image:= remaps the image (and its compressed sibling); camera_info:= and detections:= only when
    given (camera_info is otherwise the image's sibling, found by the node); use_sim_time:= sets the
    parameter only when given."""
    from launch.utilities import perform_substitutions

    context, opaque = _launch_context()
    context.launch_configurations.update(respawn="false", **arguments)
    (node,) = opaque.execute(context)
    remaps = [(perform_substitutions(context, a), perform_substitutions(context, b))
              for a, b in node._Node__remappings]
    assert remaps == expected
    node_py = NODE_PY.read_text() + NODE_PY.with_name("depth.py").read_text()
    for topic, _ in remaps:                          # the node (node.py, depth.py) subscribes each of them
        assert f'"{topic}"' in node_py, f"the node never names the topic {topic!r}"
    def overrides(node) -> dict:
        return {perform_substitutions(context, list(k)): v for k, v in node._Node__parameters[1].items()}
    assert "use_sim_time" not in overrides(node)
    context.launch_configurations.update(use_sim_time="true")
    (node,) = opaque.execute(context)
    assert overrides(node)["use_sim_time"] is True


def _launch_description():
    """(context, launch description, share): the launch file's description and a LaunchContext
    holding every launch argument's default; skips where segpp is not built into an ament prefix."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from launch.actions import DeclareLaunchArgument
    from launch.utilities import perform_substitutions

    from launch import LaunchContext
    from segpp_ros.ros.env import ensure_ament_prefix

    ensure_ament_prefix()
    try:
        share = get_package_share_directory("segpp")
    except PackageNotFoundError:
        pytest.skip("segpp is not built into an ament prefix on AMENT_PREFIX_PATH")
    spec = importlib.util.spec_from_file_location("segpp_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update({a.name: perform_substitutions(context, a.default_value)
                                          for a in ld.entities if isinstance(a, DeclareLaunchArgument)})
    return context, ld, share


def _launch_context():
    """A LaunchContext holding every launch argument's default, and the node's OpaqueFunction."""
    from launch.actions import OpaqueFunction

    context, ld, _ = _launch_description()
    return context, [e for e in ld.entities if isinstance(e, OpaqueFunction)][0]


def test_parameter_arguments_are_node_parameters(launch: LaunchFile) -> None:
    overrides = launch.constants["PARAMETER_ARGUMENTS"]
    assert overrides, "no parameter-overriding launch arguments"
    for name, text in overrides.items():
        assert name in SPECS_BY_NAME, f"launch argument {name} overrides no node parameter"
        assert text.strip()


def test_launch_arguments(launch: LaunchFile) -> None:
    args = launch.launch_arguments()
    assert {"image", "params_file", "namespace", "weights", "device"} <= set(args)
    assert set(launch.constants["PARAMETER_ARGUMENTS"]) <= set(args)
    for name, call in args.items():
        kws = {kw.arg for kw in call.keywords}
        assert {"default_value", "description"} <= kws, name
    # the launch configurations the file reads are all declared
    # (LaunchConfiguration(name) over PARAMETER_ARGUMENTS: covered by the declarations above)
    used = {n for c in launch.calls_of("LaunchConfiguration") if (n := _launch_config_name(c))}
    assert used <= set(args), used - set(args)
    assert launch.value(launch.keyword(args["image"], "default_value")) == "image"
    assert launch.value(launch.keyword(args["namespace"], "default_value")) == ""


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed (no ROS)")
def test_generate_launch_description() -> None:
    from launch.actions import OpaqueFunction
    from launch.utilities import perform_substitutions

    context, ld, share = _launch_description()
    defaults = context.launch_configurations
    assert {"image", "params_file", "namespace", "weights", "device"} <= set(defaults)
    assert Path(defaults["params_file"]) == Path(share) / "config" / "segpp.yaml"
    opaque, rviz = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    assert rviz.execute(context) == []                   # rviz:=false by default
    node, respawn = opaque.execute(context)             # respawn:=true by default: an exit handler too
    assert node.node_package == "segpp" and node.node_executable == "segpp_node"
    assert type(node).__name__ == "Node" and type(respawn).__name__ == "RegisterEventHandler"
    context.launch_configurations.update(respawn="false", lifecycle="true", autostart="true")
    (managed,) = opaque.execute(context)
    assert type(managed).__name__ == "LifecycleNode" and managed.node_package == "segpp"
    assert [perform_substitutions(context, a) for a in managed.cmd[1:3]] == ["--lifecycle", "--autostart"]
    # rviz:=true: RViz2 with the installed config where it exists, else a note (it is not here)
    context.launch_configurations.update(rviz="true")
    (action,) = rviz.execute(context)
    if type(action).__name__ == "Node":
        args = [perform_substitutions(context, a) for a in action.cmd[1:]]
        assert Path(share) / "config" / "segpp.rviz" in [Path(a) for a in args], args
    else:
        assert "RViz2 is not installed" in perform_substitutions(context, action.msg)


def test_the_rviz_config_shows_existing_outputs_with_matching_displays() -> None:
    import yaml

    from segpp_ros.ros.cameras import Camera

    config = yaml.safe_load((ROOT / "config" / "segpp.rviz").read_text())
    displays = {d["Topic"]["Value"]: d["Class"] for d in config["Visualization Manager"]["Displays"]}
    # the node (named segpp) publishes ~/<leaf>: images on overlay and label, markers on markers
    # and markers_3d, the labelled cloud on points
    kinds = {"overlay": "Image", "label": "Image", "markers": "MarkerArray", "markers_3d": "MarkerArray",
             "points": "PointCloud2"}
    outputs = {Camera("").output(leaf).replace("~", "/segpp"): leaf for leaf in kinds}
    assert set(displays) == set(outputs), displays
    for topic, kind in displays.items():
        assert kind == f"rviz_default_plugins/{kinds[outputs[topic]]}", (topic, kind)
    # the markers' namespaces are the ones the node uses, the cloud is coloured by its label
    # channel, with the QoS the publishers offer
    from segpp_ros.ros.depth import MARKER_3D_NS
    from segpp_ros.ros.keypoint_msgs import MARKER_NS

    by_topic = {d["Topic"]["Value"]: d for d in config["Visualization Manager"]["Displays"]}
    for topic, ns in (("/segpp/markers", MARKER_NS), ("/segpp/markers_3d", MARKER_3D_NS)):
        assert list(by_topic[topic]["Namespaces"]) == [ns] and by_topic[topic]["Topic"]["Reliability Policy"] == "Reliable"
    cloud = by_topic["/segpp/points"]
    assert (cloud["Color Transformer"], cloud["Channel Name"]) == ("Intensity", "label")
