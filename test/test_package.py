"""The ROS package: package.xml and CMakeLists.txt, and a real colcon workspace build of it.

The build uses the colcon and ROS 2 (PyPI wheels) of this venv, installs into a temporary
isolated install tree (not --merge-install, SEGPP_INSTALL_PYTHON_PACKAGE on: what a user's
workspace build gets) and checks what lands there: executable, launch and config files,
generated messages and the segpp_ros Python package with its embedded weights. One build per
module (~20-40 s).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros_node   # a ROS workspace build: make test runs these on Jazzy too

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "segpp"
PY_VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
# what a checkout holds besides the package (.gitignore, the venv, git): not copied into the workspace
NOT_SOURCES = (".git", ".venv", ".venv-*", "venv", "build", "install", "log", "out", ".pytest_cache", ".ruff_cache",
               "__pycache__", "*.pyc", "*.egg-info")


def _snake(camel: str) -> str:
    """rosidl's module name of a message: PersonKeypoints3DArray -> person_keypoints3_d_array."""
    words = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", camel)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


# -- package.xml / CMakeLists.txt ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def _tags(manifest: ET.Element, *tags: str) -> set[str]:
    return {(e.text or "").strip() for tag in tags for e in manifest.findall(tag)}


def test_manifest(manifest: ET.Element) -> None:
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == PACKAGE
    assert manifest.findtext("export/build_type") == "ament_cmake"
    assert {"ament_cmake", "rosidl_default_generators"} <= _tags(manifest, "buildtool_depend")
    runtime = _tags(manifest, "depend", "exec_depend")
    assert {"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs", "visualization_msgs",
            "rosidl_default_runtime"} <= runtime
    assert {"python3-torch", "python3-numpy", "python3-opencv"} <= runtime  # rosdep keys
    assert "rosidl_interface_packages" in _tags(manifest, "member_of_group")


def test_message_dependencies_are_declared(manifest: ET.Element) -> None:
    """Packages whose messages segpp's messages use are build (and run) dependencies."""
    used = set()
    for msg in (ROOT / "msg").glob("*.msg"):
        for line in msg.read_text().splitlines():
            m = re.match(r"\s*([a-z][a-z0-9_]*)/[A-Z]\w*", line.split("#", 1)[0])
            if m:
                used.add(m.group(1))
    used.discard(PACKAGE)  # its own messages
    assert used <= _tags(manifest, "depend", "build_depend"), used
    cmake = (ROOT / "CMakeLists.txt").read_text()
    deps = re.search(r"rosidl_generate_interfaces\([^)]*DEPENDENCIES([^)]*)\)", cmake)
    assert deps and used <= set(deps.group(1).split())


def test_every_message_is_generated() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"rosidl_generate_interfaces\(\s*\$\{PROJECT_NAME\}([^)]*)\)", cmake)
    assert block, "CMakeLists.txt has no rosidl_generate_interfaces(${PROJECT_NAME} ...)"
    listed = set(re.findall(r"msg/\w+\.msg", block.group(1)))
    on_disk = {f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")}
    assert on_disk and listed == on_disk


# -- workspace build ----------------------------------------------------------------------------------------
class Workspace:
    def __init__(self, base: Path, python: Path) -> None:
        self.base = base
        self.python = python
        self.prefix = base / "install" / PACKAGE
        self.site = self.prefix / "lib" / PY_VERSION / "site-packages"
        self.share = self.prefix / "share" / PACKAGE


def _venv_python() -> Path:
    candidate = Path(sys.prefix) / "bin" / "python3"
    return candidate if candidate.exists() else Path(sys.executable)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    colcon = shutil.which("colcon", path=str(Path(sys.prefix) / "bin")) or shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed")
    base = tmp_path_factory.mktemp("ws")
    # The sources are copied into the workspace: a venv inside the checkout (as `make venv` makes
    # it) puts NumPy's include directory inside the CMake source directory, and rosidl_generator_py
    # exports it (INTERFACE_INCLUDE_DIRECTORIES), which CMake refuses unless it is under the install
    # prefix. A copy also keeps every build output out of the checkout.
    src = base / "src" / PACKAGE
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    python = _venv_python()
    env = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix,
           "PATH": os.pathsep.join([str(Path(sys.prefix) / "bin"), os.environ.get("PATH", "")])}
    cmd = [colcon, "--log-base", str(base / "log"), "build", "--paths", str(src),
           "--build-base", str(base / "build"), "--install-base", str(base / "install"),
           "--event-handlers", "console_direct-", "console_cohesion+",
           "--cmake-args", f"-DPython3_EXECUTABLE={python}"]
    proc = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "1 package finished" in proc.stdout, proc.stdout[-2000:]
    return Workspace(base, python)


def test_node_executable(workspace: Workspace) -> None:
    exe = workspace.prefix / "lib" / PACKAGE / "segpp_node"
    assert exe.is_file() and os.access(exe, os.X_OK)
    text = exe.read_text()
    assert text.splitlines()[0] == f"#!{workspace.python}", "the shebang names the interpreter built for"
    compile(text, str(exe), "exec")
    assert "from segpp_ros.cli.node import main" in text


def test_share_files(workspace: Workspace) -> None:
    share = workspace.share
    assert (share / "launch" / "segpp.launch.py").read_text() == (ROOT / "launch" / "segpp.launch.py").read_text()
    assert (share / "config" / "segpp.yaml").read_text() == (ROOT / "config" / "segpp.yaml").read_text()
    assert (share / "config" / "fastdds_shm.xml").is_file()
    assert (share / "package.xml").is_file()
    assert (workspace.prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    assert (workspace.prefix / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" / PACKAGE).is_file()
    for msg in (ROOT / "msg").glob("*.msg"):
        assert (share / "msg" / msg.name).is_file()
        assert (share / "msg" / f"{msg.stem}.idl").is_file()


def test_generated_messages(workspace: Workspace) -> None:
    pkg = workspace.site / PACKAGE
    assert (pkg / "msg" / "_label_palette.py").is_file()
    for msg in (ROOT / "msg").glob("*.msg"):
        assert (pkg / "msg" / f"_{_snake(msg.stem)}.py").is_file(), msg.name
    assert list(pkg.glob(f"{PACKAGE}_s__rosidl_typesupport_c*.so")), "no C type support extension"


def test_python_package(workspace: Workspace) -> None:
    installed = workspace.site / "segpp_ros"
    assert (installed / "ros" / "node.py").is_file()
    weights = sorted(p.name for p in (ROOT / "segpp_ros" / "weights").glob("*.safetensors"))
    assert weights, "the checkout has no embedded weights"
    for name in weights:
        got = installed / "weights" / name
        assert got.is_file() and got.stat().st_size == (ROOT / "segpp_ros" / "weights" / name).stat().st_size

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    missing = files(ROOT / "segpp_ros") - files(installed)
    assert not missing, f"not installed: {sorted(missing)}"


IMPORT_CHECK = """
import json, os
from segpp.msg import LabelPalette, PersonKeypointsArray
for t in (LabelPalette, PersonKeypointsArray):
    type(t).__import_type_support__()       # loads the C type support; starts no DDS
import segpp.msg, segpp_ros, segpp_ros.ros.node
from ament_index_python.packages import get_package_share_directory
from segpp_ros.ros.env import share_file
print(json.dumps({"segpp_ros": segpp_ros.__file__, "node": segpp_ros.ros.node.__file__, "msg": segpp.msg.__file__,
                  "share": get_package_share_directory("segpp"), "params": str(share_file("config", "segpp.yaml")),
                  "node_name": segpp_ros.ros.node.NODE_NAME, "palette": str(LabelPalette())}))
"""


def test_installed_package_imports(workspace: Workspace) -> None:
    """With the install tree first on the paths (as install/setup.bash does), its modules are used."""
    env = {**os.environ,
           "PYTHONPATH": str(workspace.site),
           "AMENT_PREFIX_PATH": os.pathsep.join([str(workspace.prefix), sys.prefix]),
           "LD_LIBRARY_PATH": os.pathsep.join(p for p in [str(workspace.prefix / "lib"),
                                                          os.environ.get("LD_LIBRARY_PATH", "")] if p)}
    env.pop("PYTHONSAFEPATH", None)
    # cwd outside the checkout, so its segpp_ros is not imported from the current directory
    proc = subprocess.run([str(workspace.python), "-c", IMPORT_CHECK], cwd=workspace.base, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # PYTHONPATH comes before the venv's editable-install finder (appended to sys.meta_path)
    assert Path(got["segpp_ros"]) == workspace.site / "segpp_ros" / "__init__.py", got
    assert Path(got["node"]) == workspace.site / "segpp_ros" / "ros" / "node.py"
    assert Path(got["msg"]).is_relative_to(workspace.site), got
    assert Path(got["share"]) == workspace.share
    assert Path(got["params"]) == workspace.share / "config" / "segpp.yaml"
    assert got["node_name"] == "segpp"
    assert got["palette"].startswith("segpp.msg.LabelPalette(")
