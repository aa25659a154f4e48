"""The ROS 1 node end to end against a real rosmaster, on real Gardens Point images.

Needs the ROS 1 Python packages (Debian: python3-rospy, python3-rosmaster, ... see
scripts/setup.sh) and a venv made from ``/usr/bin/python3 --system-site-packages`` with
vpr-edge installed (``.venv-ros1``, or ``$VPR_EDGE_ROS1_PYTHON``). Skipped when absent, unless
``VPR_EDGE_REQUIRE_ROS1=1`` (CI sets it), which turns the skip into a failure.

The route is walked twice (day_left then day_right, 400 frames) at 30 Hz as 640x480
``sensor_msgs/Image``; the node keeps every 3rd frame, and every loop closure it publishes must
pair a frame of the second walk with the same place of the first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE = REPO / "ros_examples" / "ros1" / "vpr_edge_node.py"
PLAYER = REPO / "ros_examples" / "ros1" / "play_images.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ros_env(ros1_python: str, tmp_path: Path):
    """A real rosmaster on a free port; yields the environment for ROS processes."""
    port = _free_port()
    env = {**os.environ, "ROS_MASTER_URI": f"http://127.0.0.1:{port}",
           "ROS_HOSTNAME": "127.0.0.1", "ROS_HOME": str(tmp_path / "ros_home"),
           "ROS_LOG_DIR": str(tmp_path / "ros_log"), "PYTHONUNBUFFERED": "1"}
    master = subprocess.Popen([ros1_python, shutil.which("rosmaster"), "--core", "-p",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or master.poll() is not None:
                master.kill()
                pytest.fail("rosmaster did not start")
            time.sleep(0.1)
    yield env
    master.send_signal(signal.SIGINT)
    try:
        master.wait(timeout=10)
    except subprocess.TimeoutExpired:
        master.kill()


def test_loop_closures_on_a_route_walked_twice(ros1_python, ros_env, gp_model, tmp_path,
                                               gardens_point_dir, record_property, ros) -> None:
    stats_file, map_dir, result_file = (tmp_path / "stats.json", tmp_path / "map",
                                        tmp_path / "player.json")
    node = subprocess.Popen(
        [ros1_python, str(NODE), f"_model:={gp_model}", f"_map_dir:={map_dir}",
         "_backend:=onnxruntime-cpu", f"_keyframe_every_n:={ros.KEEP_EVERY}",
         "_exclusion_frames:=20", "_consistency:=3",
         "_consistency_radius:=2", f"_stats_file:={stats_file}", "image:=/camera/image_raw"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result, stats = ros.play_route(
        node, [ros1_python, str(PLAYER), "--images", str(gardens_point_dir / "day_left"),
               str(gardens_point_dir / "day_right"), "--rate", "30", "--size", "480", "640",
               "--out", str(result_file), "image:=/camera/image_raw"],
        ros_env, 180, result_file, stats_file)
    correct = ros.check_route_run(result, stats)
    loops = result["loops"]
    record_property("ros1_latency_ms_p50", result["latency_ms_p50"])
    record_property("ros1_latency_ms_p95", result["latency_ms_p95"])
    print(f"\nROS 1 image-to-loop-closure latency: p50 {result['latency_ms_p50']:.1f} ms, "
          f"p95 {result['latency_ms_p95']:.1f} ms; {len(loops)} loops, "
          f"{sum(correct)} correct; node stats {stats}")

    from vpr_edge.localizer import Localizer

    with Localizer(gp_model, map_dir, backend="onnxruntime-cpu") as saved:
        assert len(saved) == stats["processed"]  # the map was saved at shutdown


def test_missing_model_is_a_fatal_error_not_a_hang(ros1_python, ros_env, tmp_path) -> None:
    started = time.monotonic()
    node = subprocess.run([ros1_python, str(NODE), f"_model:={tmp_path / 'absent.onnx'}"],
                          env=ros_env, capture_output=True, text=True, timeout=60)
    assert node.returncode == 2
    assert "absent.onnx" in node.stdout + node.stderr
    assert time.monotonic() - started < 30


BAD_PUBLISHER = """
import json, sys, time, rospy
from rosgraph_msgs.msg import Log
from sensor_msgs.msg import Image
rospy.init_node("bad_images", anonymous=True)
rosout = []  # what the node published on /rosout (rqt_console's source)
watch = rospy.Subscriber("/rosout", Log, lambda m: rosout.append((m.name, m.level, m.msg)))
pub = rospy.Publisher("image", Image, queue_size=10)
while pub.get_num_connections() == 0 or watch.get_num_connections() == 0:
    time.sleep(0.05)
time.sleep(0.5)
frames = [("yuv422", 4, 4 * 4 * 2), ("rgb8", 5, 4 * 4 * 3), ("rgb8", 12, 10), ("rgb8", 12, 48)]
for i in range(8):
    encoding, step, size = frames[i % 4]
    pub.publish(Image(height=4, width=4, encoding=encoding, step=step, data=bytes(size)))
    time.sleep(0.1)
time.sleep(0.5)
print(json.dumps(rosout))
"""


def test_malformed_images_are_counted_and_the_node_stays_up(ros1_python, ros_env, tiny_onnx,
                                                           tmp_path, ros) -> None:
    stats_file = tmp_path / "stats.json"
    node = subprocess.Popen([ros1_python, str(NODE), f"_model:={tiny_onnx}",
                             "_backend:=onnxruntime-cpu", f"_stats_file:={stats_file}"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        published = subprocess.run([ros1_python, "-c", BAD_PUBLISHER], env=ros_env,
                                   check=True, timeout=60, capture_output=True, text=True)
        time.sleep(0.5)
        assert node.poll() is None, "the node died on bad input"
    finally:
        log = ros.stop(node)
    stats = json.loads(stats_file.read_text())
    assert stats["problems"] == {"unsupported encoding": 2, "step too small": 2,
                                 "truncated data": 2}, log
    assert stats["processed"] == 2 and stats["errors"] == 0  # the two good frames
    # vpr_edge's warning, logged once per kind, reaches the console (output="screen") and
    # /rosout as the node's own lines do (rospy had written it to the node's log file only)
    warnings = [line for line in log.splitlines() if "unsupported encoding" in line
                and "stopped" not in line]  # (the statistics at the end count them too)
    assert len(warnings) == 1 and warnings[0].startswith("[WARN]"), log
    assert "vpr_edge.loop_node: unsupported encoding: " in warnings[0]
    rosout = [msg for name, level, msg in json.loads(published.stdout.splitlines()[-1])
              if name == "/vpr_edge_loop_closure" and level == 4 and "unsupported encoding" in msg]
    assert len(rosout) == 1, published.stdout  # 4: rosgraph_msgs/Log.WARN


@pytest.mark.parametrize("remaps, topic", [
    ([], "/image/compressed"),
    (["image:=/camera/image_raw"], "/camera/image_raw/compressed"),
    (["image:=/camera/image_raw", "image/compressed:=/other/jpeg"], "/other/jpeg"),
])
def test_compressed_images_follow_the_image_remap(ros1_python, ros_env, tiny_onnx, remaps,
                                                  topic, ros) -> None:
    """With _use_compressed:=true, `image:=/camera/image_raw` alone takes
    /camera/image_raw/compressed, as image_transport names it (it stayed on
    /image/compressed, and the node waited for images that never came)."""
    line = ros.logged_line([ros1_python, str(NODE), f"_model:={tiny_onnx}",
                            "_backend:=onnxruntime-cpu", "_use_compressed:=true", *remaps],
                           ros_env, "images from")
    assert f"images from {topic} (CompressedImage)" in line, line


SIGNAL_DURING_A_MASTER_CALL = """
import os, signal, sys, threading, time
import rosgraph, rospy, rospy.core
sys.path.insert(0, sys.argv[1])
from vpr_edge_node import shut_down_on_a_thread

rospy.init_node("signal_during_a_master_call", anonymous=True)
shut_down_on_a_thread()
master = rospy.core.xmlrpcapi(rosgraph.get_master_uri())
watchdog = threading.Timer(20, lambda: os._exit(3))  # the deadlock: rospy never shuts down
watchdog.start()
with master._lock:  # the main thread inside a call to the master, as in a log to /rosout
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
deadline = time.monotonic() + 15
while not rospy.is_shutdown() and time.monotonic() < deadline:
    time.sleep(0.05)
watchdog.cancel()
print("shut down" if rospy.is_shutdown() else "still running")
"""


def test_a_signal_during_a_call_to_the_master_shuts_the_node_down(ros1_python,
                                                                   ros_env) -> None:
    """rospy's SIGINT handler, run inside the main thread while that thread was in a call to
    the master (a log line going to /rosout at start-up), waited for the lock of that same
    call: the node hung until killed (1 start in 3 when stopped right after it logged), and
    lost the places added since its last save. The node runs the handler on a thread."""
    run = subprocess.run([ros1_python, "-c", SIGNAL_DURING_A_MASTER_CALL, str(NODE.parent)],
                         env=ros_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split()[-2:] == ["shut", "down"], (
        run.returncode, run.stdout, run.stderr[-2000:])


CTRL_C_WHILE_REGISTERING = """
import os, signal, sys
import rospy
sys.path.insert(0, sys.argv.pop(1))
import vpr_edge_node

real, fired = rospy.Subscriber, []

def subscriber(*args, **kwargs):  # Ctrl-C (or roslaunch's SIGINT) as the node registers
    if not fired:
        fired.append(True)
        os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)

vpr_edge_node.rospy.Subscriber = subscriber
sys.exit(vpr_edge_node.main())
"""


def test_a_signal_while_the_node_registers_still_runs_its_shutdown(ros1_python, ros_env,
                                                                   tiny_onnx,
                                                                   tmp_path) -> None:
    """With rospy's handler on a thread, a signal landing just before rospy.on_shutdown()
    made rospy drop the hook: the node waited 120 s, then exited without saving the map or
    writing its statistics. main() now runs the shutdown itself when the hook did not."""
    stats_file = tmp_path / "stats.json"
    started = time.monotonic()
    run = subprocess.run([ros1_python, "-c", CTRL_C_WHILE_REGISTERING, str(NODE.parent),
                          f"_model:={tiny_onnx}", "_backend:=onnxruntime-cpu",
                          f"_stats_file:={stats_file}"],
                         env=ros_env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr[-2000:]
    assert time.monotonic() - started < 60 and stats_file.is_file()
    assert (run.stdout + run.stderr).count("vpr-edge loop closure stopped") == 1



CAMERA = """
import time, rospy
from sensor_msgs.msg import Image
rospy.init_node("camera", anonymous=True)
pub = rospy.Publisher("image", Image, queue_size=10)
while pub.get_num_connections() == 0:
    time.sleep(0.05)
time.sleep(0.5)
for i in range(900):  # 30 s at 30 Hz: the node is to exit long before
    frame = Image(height=10, width=14, encoding="rgb8", step=42, data=bytes([i % 256]) * 420)
    frame.header.stamp = rospy.Time.now()
    pub.publish(frame)
    time.sleep(1 / 30)
"""


def test_a_dead_worker_stops_the_node_with_one_fatal_line(ros1_python, ros_env, tiny_onnx,
                                                          tmp_path, ros) -> None:
    """rospy logs what an image callback raises and goes on: once the worker had died the
    node stayed up, dropped every frame and logged a traceback for each ("bad callback", at
    camera rate), and roslaunch's required/respawn never acted. It now logs the reason once
    and shuts down (statistics written once), exiting with code 1."""
    stats_file = tmp_path / "stats.json"
    worker_dies = ros.WORKER_DIES.format(main="main()")
    code, out = ros.run_with_a_dead_worker(
        [ros1_python, "-c", worker_dies, str(NODE.parent), f"_model:={tiny_onnx}",
         "_backend:=onnxruntime-cpu", f"_stats_file:={stats_file}"],
        [ros1_python, "-c", CAMERA], ros_env, timeout=20)
    assert code == 1, out[-3000:]
    fatal = [line for line in out.splitlines() if line.startswith("[FATAL]")]
    assert len(fatal) == 2, out[-3000:]  # the worker's own report, then the node's reason
    assert "vpr_edge.loop_node: the loop-closure worker stopped" in fatal[0]
    assert "vpr-edge: the loop-closure worker stopped (Bug('simulated bug in the worker')" \
        in fatal[1]
    assert "bad callback" not in out
    assert out.count("Traceback (most recent call last)") == 1, out[-3000:]  # the worker's
    assert out.count("vpr-edge loop closure stopped") == 1 and stats_file.is_file()
