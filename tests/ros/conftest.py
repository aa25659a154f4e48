"""Fixtures for the ROS node tests: a real model, and process helpers."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
ROUTE_FRAMES = 200  # frames per Gardens Point walk
KEEP_EVERY = 3  # the nodes' keyframe_every_n in the end-to-end tests
#: `python -c` script: the node (its folder the first argument) with a worker that dies at
#: its first keyframe, as a bug would; {main} is how the node's main() is called
WORKER_DIES = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import vpr_edge_node
from vpr_edge.loop_node import LoopClosureNode

class Bug(BaseException):  # escapes the worker's per-frame handler, as a bug would
    pass

def dies(self, item):
    raise Bug("simulated bug in the worker")

LoopClosureNode._process = dies
sys.exit(vpr_edge_node.{main})
"""


@pytest.fixture(scope="session")
def gp_model(gardens_point_dir: Path, tmp_path_factory) -> Path:
    """The default model (ImageNet EfficientNet-Lite0 + k-means NetVLAD, 240x320) on day_left."""
    pytest.importorskip("torch")
    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.training.checkpoint import save_checkpoint
    from vpr_edge.training.config import preset
    from vpr_edge.training.init_model import init_model, list_images

    out = tmp_path_factory.mktemp("gp_model")
    model, _ = init_model(preset(), list_images(gardens_point_dir / "day_left")[::2],
                          progress=False)
    save_checkpoint(out / "gp.pt", model)
    result = export(ExportConfig(checkpoint=out / "gp.pt", output_dir=out, engine=False,
                                 validate=False))
    return result.files["onnx"]


def environment_python(variable: str, venv: str, imports: str, what: str) -> str:
    """The interpreter of a ROS venv, or skip (fail when ``VPR_EDGE_REQUIRE_<ROS>`` is set)."""
    python = os.environ.get(variable, str(REPO / venv / "bin" / "python"))
    required = os.environ.get(variable.replace("_PYTHON", "").replace("VPR_EDGE_",
                                                                      "VPR_EDGE_REQUIRE_"))

    def unavailable(reason: str):
        if required:
            pytest.fail(f"{what} required but {reason}")
        pytest.skip(reason)

    if not Path(python).exists():
        unavailable(f"no {what} environment at {python}; run scripts/setup.sh")
    probe = subprocess.run([python, "-c", f"import {imports}"], capture_output=True, text=True)
    if probe.returncode:
        unavailable(f"{python} cannot import {imports}: {probe.stderr[-300:]}")
    return python


def stop(process: subprocess.Popen, timeout: float = 30) -> str:
    """SIGINT (what Ctrl-C and roslaunch send), then the process's output."""
    process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def logged_line(command: list[str], env: dict, text: str, timeout: float = 60) -> str:
    """Start ``command`` and return the first line of its output holding ``text`` (the output
    read so far, if it ends or ``timeout`` passes first); then stop it with SIGINT."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        return _line_with(process, text, timeout)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _line_with(process: subprocess.Popen, text: str, timeout: float) -> str:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if text in line:
            return line
        seen.append(line)
    return "".join(seen)


def play_route(node: subprocess.Popen, player: list[str], env: dict, timeout: float,
               result_file: Path, stats_file: Path) -> tuple[dict, dict]:
    """Run the image player against the started ``node``, stop the node, and return the
    player's results and the node's statistics (asserting both exited cleanly)."""
    try:
        played = subprocess.run(player, env=env, capture_output=True, text=True,
                                timeout=timeout)
    finally:
        node_log = stop(node)
    assert played.returncode == 0, played.stdout + played.stderr + node_log
    assert node.returncode == 0, node_log
    return json.loads(result_file.read_text()), json.loads(stats_file.read_text())


def check_route_run(result: dict, stats: dict, min_loops: int = 20,
                    min_received: float = 0.95) -> list[bool]:
    """The checks both end-to-end tests make; returns per-loop correctness.

    ``min_received``: fraction of the published frames the middleware must deliver.
    """
    assert result["frames"] == 2 * ROUTE_FRAMES and result["achieved_rate_hz"] > 25
    assert stats["received"] >= min_received * result["frames"], stats
    # The node kept up by dropping frames by policy, not by queueing them.
    assert abs(stats["keyframes"] - stats["received"] / KEEP_EVERY) <= 2, stats
    assert stats["processed"] + stats["dropped_busy"] == stats["keyframes"]
    assert stats["dropped_busy"] <= 0.05 * stats["keyframes"], stats
    assert stats["errors"] == 0
    loops = result["loops"]
    assert len(loops) >= min_loops, (stats, loops[:5])
    assert all(lp["query"] is not None and lp["match"] is not None for lp in loops), \
        "every loop names frames that were published"
    assert all(lp["query"] >= ROUTE_FRAMES for lp in loops), "no loops on the first walk"
    correct = [abs((lp["query"] - ROUTE_FRAMES) - lp["match"]) <= 3 for lp in loops]
    assert sum(correct) / len(correct) >= 0.9, loops
    return correct


@pytest.fixture(scope="session")
def ros1_python() -> str:
    """Python of .venv-ros1 (Debian's rospy + vpr-edge), with rosmaster on PATH."""
    if shutil.which("rosmaster") is None and not os.environ.get("VPR_EDGE_REQUIRE_ROS1"):
        pytest.skip("no rosmaster: run scripts/setup.sh (Debian ROS 1 packages)")
    return environment_python("VPR_EDGE_ROS1_PYTHON", ".venv-ros1",
                              "rospy, std_srvs, vpr_edge, onnxruntime", "ROS 1")


@pytest.fixture(scope="session")
def ros2_python() -> str:
    """Python of .venv-ros2 (the ros-rclpy wheels from PyPI + vpr-edge)."""
    return environment_python("VPR_EDGE_ROS2_PYTHON", ".venv-ros2",
                              "rclpy, std_srvs.srv, nav_msgs.msg, vpr_edge, onnxruntime",
                              "ROS 2")


def run_with_a_dead_worker(node_command: list[str], camera_command: list[str], env: dict,
                           timeout: float) -> tuple[int, str]:
    """Run a node whose worker dies (:data:`WORKER_DIES`) while a camera publishes
    (``camera_command``), until the node exits by itself; its exit code and output (stdout
    and stderr together). Fails when it is still up after ``timeout`` seconds."""
    node = subprocess.Popen(node_command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    camera = subprocess.Popen(camera_command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        out, _ = node.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        node.kill()
        out, _ = node.communicate()
        pytest.fail("the node stayed up with a dead worker:\n" + out[-3000:])
    finally:
        camera.kill()
        camera.wait()
    return node.returncode, out


@pytest.fixture(scope="session")
def ros() -> SimpleNamespace:
    """The helpers above, for the test modules (which cannot import this conftest)."""
    return SimpleNamespace(REPO=REPO, ROUTE_FRAMES=ROUTE_FRAMES, KEEP_EVERY=KEEP_EVERY,
                           WORKER_DIES=WORKER_DIES, run_with_a_dead_worker=run_with_a_dead_worker,
                           stop=stop, logged_line=logged_line, play_route=play_route,
                           check_route_run=check_route_run)
