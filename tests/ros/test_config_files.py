"""The parameter files, the launch file and the README table agree with the node's table."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vpr_edge.node_params import PARAMS

yaml = pytest.importorskip("yaml")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "ros_examples"
DEFAULTS = {p.name: p.default for p in PARAMS}


def test_param_files_list_every_parameter_with_its_default() -> None:
    ros1 = yaml.safe_load((EXAMPLES / "config" / "ros1_params.yaml").read_text())
    ros2 = yaml.safe_load((EXAMPLES / "config" / "ros2_params.yaml").read_text())
    assert ros1 == DEFAULTS
    assert ros2 == {"vpr_edge_loop_closure": {"ros__parameters": DEFAULTS}}


def test_readme_documents_every_parameter() -> None:
    text = (EXAMPLES / "README.md").read_text()
    for p in PARAMS:
        assert f"| `{p.name}` | {p.type_name} |" in text, f"{p.name} missing from the table"


def test_roslaunch_resolves_the_launch_file(ros1_python: str, tmp_path: Path) -> None:
    env = {**os.environ, "ROS_HOME": str(tmp_path), "ROS_PACKAGE_PATH": str(EXAMPLES)}
    out = subprocess.run(
        [ros1_python, "/usr/bin/roslaunch", "--dump-params",
         str(EXAMPLES / "ros1" / "launch" / "vpr_edge.launch"), "model:=/robot/model.onnx"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    params = yaml.safe_load(out)
    node = {k.rsplit("/", 1)[1]: v for k, v in params.items()
            if k.startswith("/vpr_edge_loop_closure/")}
    assert node == {**DEFAULTS, "model": "/robot/model.onnx"}
