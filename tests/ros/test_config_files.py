"""The parameter files, the launch file and the README table agree with the node's table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vpr_edge.node_params import PARAMS

yaml = pytest.importorskip("yaml")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "ros_examples"
DEFAULTS = {p.name: p.default for p in PARAMS}


def test_param_files_list_every_parameter_with_its_default() -> None:
    ros1 = yaml.safe_load((EXAMPLES / "ros1" / "config" / "ros1_params.yaml").read_text())
    ros2 = yaml.safe_load((EXAMPLES / "ros2" / "config" / "ros2_params.yaml").read_text())
    assert ros1 == DEFAULTS
    assert ros2 == {"vpr_edge_loop_closure": {"ros__parameters": DEFAULTS}}


def test_readme_documents_every_parameter() -> None:
    text = (EXAMPLES / "README.md").read_text()
    for p in PARAMS:
        assert f"| `{p.name}` | {p.type_name} |" in text, f"{p.name} missing from the table"


def dump_node_params(ros1_python: str, launch: Path, package_path: Path, home: Path) -> dict:
    """The parameters ``roslaunch`` gives the node, with ``package_path`` as ROS_PACKAGE_PATH."""
    env = {**os.environ, "ROS_HOME": str(home), "ROS_PACKAGE_PATH": str(package_path)}
    out = subprocess.run(
        [ros1_python, "/usr/bin/roslaunch", "--dump-params", str(launch),
         "model:=/robot/model.onnx"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    params = yaml.safe_load(out)
    return {k.rsplit("/", 1)[1]: v for k, v in params.items()
            if k.startswith("/vpr_edge_loop_closure/")}


def test_roslaunch_resolves_the_launch_file(ros1_python: str, tmp_path: Path) -> None:
    launch = EXAMPLES / "ros1" / "launch" / "vpr_edge.launch"
    node = dump_node_params(ros1_python, launch, EXAMPLES, tmp_path)
    assert node == {**DEFAULTS, "model": "/robot/model.onnx"}


def test_roslaunch_resolves_the_installed_launch_file(ros1_python: str, tmp_path: Path) -> None:
    """After ``catkin install`` the package is ``share/vpr_edge_ros`` holding package.xml and
    the folders CMakeLists.txt installs there: the default parameter file must be among them
    (no catkin here, so the install is laid out by hand from CMakeLists.txt)."""
    package = EXAMPLES / "ros1"
    cmake = (package / "CMakeLists.txt").read_text()
    folders = re.search(
        r"install\(DIRECTORY (.+?) DESTINATION \$\{CATKIN_PACKAGE_SHARE_DESTINATION\}\)", cmake)
    assert folders is not None, "CMakeLists.txt installs no folders into the package share"
    share = tmp_path / "install" / "share" / "vpr_edge_ros"
    share.mkdir(parents=True)
    shutil.copy(package / "package.xml", share)
    for folder in folders.group(1).split():
        shutil.copytree(package / folder, share / folder)
    node = dump_node_params(ros1_python, share / "launch" / "vpr_edge.launch", share.parent,
                            tmp_path)
    assert node == {**DEFAULTS, "model": "/robot/model.onnx"}


def test_installed_player_finds_its_imports(ros1_python: str, tmp_path: Path) -> None:
    """``catkin install`` puts the programs and files CMakeLists.txt names into
    ``lib/vpr_edge_ros``; the player must run from there (laid out by hand: no catkin)."""
    package = EXAMPLES / "ros1"
    cmake = (package / "CMakeLists.txt").read_text()
    programs = re.search(r"catkin_install_python\(PROGRAMS (.+?)\s+DESTINATION", cmake, re.S)
    files = re.findall(r"install\(FILES (.+?) DESTINATION \$\{CATKIN_PACKAGE_BIN_DESTINATION\}\)",
                       cmake)
    assert programs is not None
    bin_dir = tmp_path / "lib" / "vpr_edge_ros"
    bin_dir.mkdir(parents=True)
    for name in [*programs.group(1).split(), *" ".join(files).split()]:
        shutil.copy(package / name, bin_dir)
    run = subprocess.run([ros1_python, str(bin_dir / "play_images.py"), "--help"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ROS_HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert "--images" in run.stdout


def test_ros2_launch_file_points_at_the_node_and_its_parameter_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``ros2 launch`` here: the launch file is loaded with stand-ins for the ``launch``
    package, so only the paths it computes are checked."""
    import importlib.util
    import sys
    import types
    from unittest import mock

    for name in ("launch", "launch.actions", "launch.substitutions"):
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(
            LaunchDescription=mock.Mock(), DeclareLaunchArgument=mock.Mock(),
            ExecuteProcess=mock.Mock(), LaunchConfiguration=mock.Mock()))
    path = EXAMPLES / "ros2" / "launch" / "vpr_edge.launch.py"
    spec = importlib.util.spec_from_file_location("vpr_edge_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE == EXAMPLES / "ros2" / "vpr_edge_node.py" and module.NODE.is_file()
    assert module.PARAMS.is_file()
    assert yaml.safe_load(module.PARAMS.read_text()) == {
        "vpr_edge_loop_closure": {"ros__parameters": DEFAULTS}}
