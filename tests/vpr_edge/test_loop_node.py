"""The ROS nodes' logic without ROS: keyframes, the drop-oldest mailbox, loops, services."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.keyframes import KeyframeConfig
from vpr_edge.localizer import Localizer
from vpr_edge.loop_closure import LoopClosureConfig
from vpr_edge.loop_node import LoopClosureNode, NodeConfig
from vpr_edge.poses import Pose


@pytest.fixture
def route() -> tuple[np.ndarray, np.ndarray]:
    """40 distinct frames, and the same 40 seen again with mild noise.

    The tiny test model sees channel means and maxima, so each place gets its own colour:
    revisits then score >= 0.9996 and different places <= 0.9963.
    """
    rng = np.random.default_rng(5)
    colours = rng.integers(20, 236, (40, 1, 1, 3))
    first = np.clip(colours + rng.integers(-8, 9, (40, 24, 32, 3)), 0, 255).astype(np.uint8)
    again = np.clip(first.astype(int) + rng.integers(-3, 4, first.shape), 0, 255)
    return first, again.astype(np.uint8)


def make_node(tiny_onnx: Path, tmp_path: Path, **changes) -> tuple[LoopClosureNode, list]:
    loops: list = []
    config = NodeConfig(
        model=str(tiny_onnx), map_dir=str(tmp_path / "map"),
        detector=LoopClosureConfig(min_score=0.999, exclusion_frames=10, consistency=3),
        **changes)
    loc = Localizer(tiny_onnx, config.map_dir, backend="onnxruntime-cpu")
    return LoopClosureNode(config, loops.append, localizer=loc), loops


def feed(node: LoopClosureNode, frames, start: float, wait: bool = True) -> None:
    for i, frame in enumerate(frames):
        node.on_image(lambda f=frame: f, stamp=start + i * 0.1)
        if wait:
            assert node.wait_idle()


def test_loops_found_on_the_second_pass(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, loops = make_node(tiny_onnx, tmp_path)
    first, again = route
    feed(node, first, 0.0)
    assert loops == []
    feed(node, again, 100.0)
    summary = node.shutdown(str(tmp_path / "stats.json"))
    assert json.loads((tmp_path / "stats.json").read_text()) == summary
    assert len(loops) >= 30, node.stats.summary()
    assert all(abs(loop.query_id - 40 - loop.match_id) <= 1 for loop in loops)
    stats = node.stats.summary()
    assert stats["processed"] == 80 and stats["loops"] == len(loops) and stats["errors"] == 0
    assert stats["latency_ms_p50"] > 0
    reopened = Localizer(tiny_onnx, tmp_path / "map", backend="onnxruntime-cpu")
    assert len(reopened) == 80  # saved on shutdown


def test_frames_in_their_own_channel_order(tiny_onnx, tmp_path, cpu_only, route) -> None:
    """``convert`` may give ``(pixels, colour_order)`` (``message_to_frame``): BGR frames
    find the same loops as their RGB conversions."""
    node, loops = make_node(tiny_onnx, tmp_path)
    first, again = route
    feed(node, first, 0.0)
    for i, frame in enumerate(again):
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        node.on_image(lambda f=bgr: (f, "BGR"), stamp=100.0 + i * 0.1)
        assert node.wait_idle()
    node.shutdown()
    assert len(loops) >= 30, node.stats.summary()
    assert all(abs(loop.query_id - 40 - loop.match_id) <= 1 for loop in loops)


def test_keyframe_policy_skips_conversion(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=4))
    converted = []
    for i, frame in enumerate(route[0]):
        node.on_image(lambda f=frame: converted.append(1) or f, stamp=i * 0.1)
        node.wait_idle()
    node.close()
    assert len(converted) == 10 and node.stats.dropped_policy == 30
    assert len(node.localizer) == 10


def test_motion_keyframes_use_poses(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(40):
        node.on_pose(i * 0.1, Pose(i * 0.25, 0.0))  # 2.5 m/s
    feed(node, route[0], 0.0)
    node.close()
    assert node.stats.keyframes == 10
    xs = sorted(node.localizer.get(pid).pose[0] for pid in node.localizer.index.ids())
    assert xs == pytest.approx([i * 1.0 for i in range(10)])


def test_a_flood_is_dropped_not_queued(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path)
    real = node.detector.process_frame
    node.detector.process_frame = lambda *a, **k: (time.sleep(0.02), real(*a, **k))[1]
    frames = np.concatenate([route[0]] * 5)  # 200 frames as fast as they come
    tic = time.monotonic()
    feed(node, frames, 0.0, wait=False)
    assert time.monotonic() - tic < 1.0, "on_image must not block on the worker"
    assert node.wait_idle()
    node.close()
    s = node.stats
    assert s.dropped_busy > 100 and s.processed + s.dropped_busy == s.keyframes == 200


def test_a_bad_frame_is_logged_and_the_node_goes_on(tiny_onnx, tmp_path, cpu_only,
                                                    route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path)
    node.on_image(lambda: np.zeros((4, 4), np.float64), stamp=0.0)  # not uint8
    assert node.wait_idle()
    feed(node, route[0][:3], 1.0)
    node.close()
    assert node.stats.errors == 1 and node.stats.processed == 3


@pytest.mark.parametrize("changes, words", [
    ({"autosave_seconds": "60"}, "autosave_seconds must be >= 0 and finite"),
    ({"autosave_seconds": float("inf")}, "autosave_seconds"),
    ({"autosave_seconds": float("nan")}, "autosave_seconds"),
    ({"autosave_seconds": -1.0}, "autosave_seconds"),
    ({"pose_max_gap": 0.0}, "pose_max_gap must be > 0"),
    ({"pose_max_gap": "0.1"}, "pose_max_gap"),
    ({"save_on_shutdown": "false"}, "save_on_shutdown must be True or False"),
    ({"model": ""}, "model must be the path of the exported model"),
    ({"model": None}, "model must be the path"),
    ({"map_dir": ""}, "map_dir must be a path, or None"),
    ({"map_dir": 5}, "map_dir"),
    ({"backend": None}, "backend must be a str"),
    ({"detector": {"min_score": 0.3}}, "detector must be a LoopClosureConfig"),
    ({"keyframes": None}, "keyframes must be a KeyframeConfig"),
])
def test_a_bad_node_config_is_refused_when_made(changes: dict, words: str) -> None:
    """NodeConfig checked nothing: ``autosave_seconds="60"`` killed the worker thread with a
    TypeError, and on_image went on queueing frames that nothing processed."""
    with pytest.raises(InvalidInputError, match=f"^NodeConfig: .*{words}"):
        NodeConfig(**{"model": "model.onnx", **changes})
    assert NodeConfig(model=Path("model.onnx"), map_dir=Path("map")).autosave_seconds == 60.0


def test_a_dead_worker_is_reported_not_fed(tiny_onnx, tmp_path, cpu_only, route,
                                           caplog) -> None:
    """When the worker thread died, on_image kept returning True (queued) for ever; and the
    frame it died on was in no counter."""
    class Fatal(BaseException):  # gets past the handler that keeps one bad frame harmless
        pass

    node, _ = make_node(tiny_onnx, tmp_path)
    node.detector.process_frame = lambda *a, **k: (_ for _ in ()).throw(Fatal("a bug"))
    with caplog.at_level("CRITICAL", logger="vpr_edge.loop_node"):
        node.on_image(lambda: route[0][0], stamp=0.0)
        assert wait_for(lambda: not node._worker.is_alive())
    assert "worker stopped" in caplog.text and "a bug" in caplog.text
    with pytest.raises(VprEdgeError, match=r"worker stopped \(Fatal\('a bug'\).*restart the node"):
        node.on_image(lambda: route[0][1], stamp=0.1)
    node.close()
    assert node.stats.errors == 1
    assert_every_frame_counted_once(node.stats)


def test_a_stamp_that_is_not_finite_seconds_is_refused_at_once(tiny_onnx, tmp_path, cpu_only,
                                                               route) -> None:
    """Queued, then refused by the worker (an error in the statistics; for a str the log
    line failed too), and an inf stamp emptied the detector's time window."""
    node, _ = make_node(tiny_onnx, tmp_path)
    for bad in (float("nan"), float("inf"), "1.0", None, True):
        with pytest.raises(InvalidInputError, match="stamp must be finite seconds"):
            node.on_image(lambda: route[0][0], stamp=bad)
    node.close()
    assert node.stats.received == 0 and node.stats.errors == 0


def test_a_frame_s_metadata_goes_with_its_place(tiny_onnx, tmp_path, cpu_only, route) -> None:
    """``meta`` given with a frame is stored with its place and comes back in the
    ``match_meta`` of a loop to it; anything but a dict is refused at once, not by the
    worker (an error in the statistics, the frame lost)."""
    node, loops = make_node(tiny_onnx, tmp_path)
    with pytest.raises(InvalidInputError, match="meta must be a dict"):
        node.on_image(lambda: route[0][0], stamp=0.0, meta=[("camera", "left")])
    for i, frame in enumerate(route[0]):
        node.on_image(lambda f=frame: f, stamp=i * 0.1, meta={"n": i})
        assert node.wait_idle()
    feed(node, route[1], 100.0)
    node.close()
    assert node.stats.errors == 0 and node.stats.received == 80
    assert node.localizer.get(5).meta == {"n": 5}
    assert loops and all(loop.match_meta == {"n": loop.match_id} for loop in loops)


def test_save_and_reset_services(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, loops = make_node(tiny_onnx, tmp_path)
    feed(node, route[0], 0.0)
    assert Path(node.save()).is_dir()
    node.reset()
    assert len(node.localizer) == 0
    feed(node, route[1], 100.0)  # the old places are gone: no loops
    node.close()
    assert loops == []


def test_queries_run_while_the_worker_adds(tiny_onnx, tmp_path, cpu_only, route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path)
    errors = []

    def query() -> None:
        try:
            for frame in route[1]:
                node.localizer.query(frame, k=3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    reader = threading.Thread(target=query)
    reader.start()
    feed(node, route[0], 0.0)
    reader.join()
    node.close()
    assert errors == []


def test_bad_messages_are_counted_by_kind_and_logged_once(tiny_onnx, tmp_path, cpu_only,
                                                          route, caplog) -> None:
    from types import SimpleNamespace

    from vpr_edge.ros_image import image_to_rgb

    node, _ = make_node(tiny_onnx, tmp_path)
    bad = [SimpleNamespace(encoding="yuv422", height=2, width=2, step=4, data=b"\0" * 8)] * 3
    bad += [SimpleNamespace(encoding="rgb8", height=2, width=2, step=3, data=b"\0" * 12)] * 2
    with caplog.at_level("WARNING", logger="vpr_edge.loop_node"):
        for i, msg in enumerate(bad):
            assert not node.on_image(lambda m=msg: image_to_rgb(m), stamp=float(i))
        node.on_pose(5.0, Pose(0, 0))
        node.on_pose(4.0, Pose(0, 0))  # out of order: kept, counted
    feed(node, route[0][:2], 10.0)
    node.close()
    assert node.stats.problems == {"unsupported encoding": 3, "step too small": 2,
                                   "odometry out of order": 1}
    assert len(caplog.records) == 3  # once per kind
    assert node.stats.processed == 2 and len(node.poses) == 2


def test_a_map_with_xy_poses_gets_the_x_y_of_odometry(tiny_onnx, tmp_path, cpu_only,
                                                      route) -> None:
    """A map built with x, y poses (a --list with two pose columns) refused every keyframe
    of the node (7-value poses): nothing was added again, no loop found."""
    loc = Localizer(tiny_onnx, backend="onnxruntime-cpu")
    loc.index.add(loc.describe(list(route[0][:3])), poses=[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)])
    loc.save(tmp_path / "map")
    loc.close()
    node, _ = make_node(tiny_onnx, tmp_path)
    node.on_pose(9.95, Pose(5.0, 6.0, 7.0))
    node.on_pose(10.05, Pose(5.0, 6.0, 7.0))
    feed(node, route[0][3:5], 10.0)
    node.close()
    assert node.stats.errors == 0 and node.stats.processed == 2
    poses = [node.localizer.get(pid).pose for pid in node.localizer.index.ids()]
    assert poses[3:] == [(5.0, 6.0), (5.0, 6.0)]


def test_reset_starts_a_new_session(tiny_onnx, tmp_path, cpu_only, route) -> None:
    """reset() drops the frame waiting for the worker, the odometry and the removed
    places' rows, and an emptied map is saved at shutdown even when no frame follows (the
    old places came back at the next start)."""
    node, _ = make_node(tiny_onnx, tmp_path)
    for i in range(8):  # (odometry past every frame's stamp: none waits for it)
        node.on_pose(i * 0.1, Pose(10.0, 0))
    feed(node, route[0][:5], 0.0)
    assert Path(node.save()).is_dir()
    gate = hold_the_worker_on(node, route[0][5], 0.5)
    node.on_image(lambda: route[0][6], stamp=0.6)  # waiting in the mailbox
    node.reset()
    gate.set()
    assert node.wait_idle()
    assert len(node.localizer) == 0 and node.localizer.index.info()["rows"] == 0
    assert len(node.poses) == 0
    # both count as dropped by the reset: the one taken before it, and the one in the
    # mailbox (which the reset dropped uncounted: processed + dropped fell one short)
    stats = node.stats
    assert (stats.keyframes, stats.processed, stats.dropped_reset) == (7, 5, 2)
    node.on_pose(50.0, Pose(500.0, 0))
    node.on_pose(50.1, Pose(500.0, 0))
    assert node.stats.problems == {}  # the new session's odometry is not "out of order"
    node.shutdown()
    assert len(Localizer(tiny_onnx, tmp_path / "map", backend="onnxruntime-cpu")) == 0


def test_close_saves_only_a_changed_map_and_counts_a_waiting_frame(tiny_onnx, tmp_path,
                                                                   cpu_only, route,
                                                                   monkeypatch) -> None:
    """A keyframe the worker cannot take within CLOSE_DRAIN_SECONDS counts as dropped."""
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "CLOSE_DRAIN_SECONDS", 0.1)
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:3], 0.0)
    node.close()
    manifest = tmp_path / "map" / "manifest.json"
    saved = manifest.stat().st_mtime_ns
    node, _ = make_node(tiny_onnx, tmp_path)  # opens it, gets no frame: nothing to save
    real = node.detector.process_frame
    gate = threading.Event()
    node.detector.process_frame = lambda *a, **k: (gate.wait(10), real(*a, **k))[1]
    node.on_image(lambda: route[0][3], stamp=1.0)  # held in the worker
    time.sleep(0.2)
    node.on_image(lambda: route[0][4], stamp=1.1)  # waiting when the node closes
    closing = threading.Thread(target=node.close)
    closing.start()
    time.sleep(0.3)  # past the drain
    gate.set()
    closing.join(10)
    assert node.stats.dropped_busy == 1 and node.stats.processed == 1
    assert manifest.stat().st_mtime_ns != saved  # the held frame's place was added: saved
    node, _ = make_node(tiny_onnx, tmp_path)
    again = manifest.stat().st_mtime_ns
    node.close()
    assert manifest.stat().st_mtime_ns == again


def test_shutdown_writes_statistics_when_the_save_fails(tiny_onnx, tmp_path, cpu_only,
                                                        route) -> None:
    from vpr_edge.errors import MapError

    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:2], 0.0)

    def failing_save(*_args):
        raise MapError("disk full")

    node.localizer.save = failing_save
    with pytest.raises(MapError):
        node.shutdown(str(tmp_path / "stats.json"))
    assert json.loads((tmp_path / "stats.json").read_text())["processed"] == 2


def test_statistics_that_cannot_be_written_hide_neither_the_save_nor_the_summary(
        tiny_onnx, tmp_path, cpu_only, route, caplog) -> None:
    """A stats_file whose disk fails at shutdown: the OSError, raised from shutdown's
    finally, replaced a failed save's MapError (the ROS nodes catch VprEdgeError to say the
    map was not saved and exit 1) and lost the summary they log."""
    from vpr_edge.errors import MapError

    (tmp_path / "not_a_folder").write_text("")
    unwritable = str(tmp_path / "not_a_folder" / "stats.json")
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:2], 0.0)

    def failing_save(*_args):
        raise MapError("disk full")

    node.localizer.save = failing_save
    with pytest.raises(MapError, match="disk full"):
        node.shutdown(unwritable)
    assert "statistics could not be written" in caplog.text

    node, _ = make_node(tiny_onnx, tmp_path / "second")
    feed(node, route[0][:3], 0.0)
    summary = node.shutdown(unwritable)
    assert summary["processed"] == 3
    # the file is written whole, through a temporary beside it, which is not left behind
    node, _ = make_node(tiny_onnx, tmp_path / "third")
    feed(node, route[0][:1], 0.0)
    node.shutdown(str(tmp_path / "stats.json"))
    assert json.loads((tmp_path / "stats.json").read_text())["processed"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_image_that_needs_a_missing_library_is_counted(tiny_onnx, tmp_path, cpu_only,
                                                          route) -> None:
    """Bayer images need OpenCV, which `vpr-edge[cpu]` lacks: MissingDependencyError is
    counted like a malformed message (it used to escape into the ROS callback)."""
    from vpr_edge.errors import MissingDependencyError

    def bayer():
        raise MissingDependencyError("bayer_rggb8 images need OpenCV: pip install "
                                     "'vpr-edge[verify]'")

    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=5))
    assert not node.on_image(bayer, stamp=0.0)
    feed(node, route[0][:1], 1.0)  # the keyframe the bad one could not be
    node.close()
    assert node.stats.problems == {"bad image": 1} and node.stats.processed == 1


def test_a_converter_that_raises_leaves_the_keyframe_to_the_next_frame(tiny_onnx, tmp_path,
                                                                      cpu_only, route) -> None:
    """A custom converter's own bug (not a VprEdgeError) reaches the caller, counted as an
    error (it was counted nowhere), and the frame does not count as the keyframe: with
    every_n=5 the next frame is described, not the fifth after it (the policy had taken the
    failed frame as its keyframe)."""
    def broken():
        raise ValueError("a bug in the converter")

    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=5))
    with pytest.raises(ValueError, match="a bug in the converter"):
        node.on_image(broken, stamp=0.0)
    feed(node, route[0][:1], 1.0)
    node.close()
    assert node.stats.processed == node.stats.keyframes == 1 and node.stats.problems == {}
    assert node.stats.errors == 1
    assert_every_frame_counted_once(node.stats)


@pytest.mark.parametrize("closes", [False, True])
def test_a_program_that_ends_without_close_gets_its_node_closed_at_exit(
        tiny_onnx, tmp_path, closes: bool) -> None:
    """A program that ended without close() while the worker ran aborted 4 times in 10
    (SIGABRT: the daemon worker was stopped inside ONNX Runtime) and lost the places since
    the last save. An exit hook closes the node: the worker stops, the map is saved; a node
    closed by its program is left alone."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from vpr_edge.loop_node import LoopClosureNode, NodeConfig\n"
        "node = LoopClosureNode(NodeConfig(model=sys.argv[1], map_dir=sys.argv[2]),"
        " publish=lambda loop: None)\n"
        "rng = np.random.default_rng(0)\n"
        "for i in range(6):\n"
        "    frame = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)\n"
        "    node.on_image(lambda f=frame: f, stamp=float(i))\n"
        "    assert node.wait_idle()\n"
        "print(node.stats.processed)\n"
        + ("node.close()\n" if closes else ""))
    done = subprocess.run([sys.executable, "-c", script, str(tiny_onnx), str(tmp_path / "map")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("the loop-closure node was not closed: closing it at exit" in done.stderr) != closes
    processed = int(done.stdout.split()[-1])
    assert processed >= 1 and len(Localizer(tiny_onnx, tmp_path / "map")) == processed


def test_close_releases_the_localizer_the_node_opened_not_one_it_was_given(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """Each closed node kept its ONNX Runtime session (about 20 MB) and a native thread: 30
    nodes started and closed in one process held 708 MB."""
    own = LoopClosureNode(NodeConfig(model=str(tiny_onnx), map_dir=str(tmp_path / "own"),
                                     backend="onnxruntime-cpu"), lambda loop: None)
    feed(own, route[0][:2], 1.0)
    own.close()
    assert own.localizer._backend.closed and len(Localizer(tiny_onnx, tmp_path / "own")) == 2
    given, _ = make_node(tiny_onnx, tmp_path)
    given.close()
    assert not given.localizer._backend.closed


def test_a_frame_converted_during_a_reset_stays_out_of_the_new_session(tiny_onnx, tmp_path,
                                                                       cpu_only,
                                                                       route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path)
    started, finish = threading.Event(), threading.Event()

    def slow_convert():
        started.set()
        assert finish.wait(10)
        return route[0][0]

    arriving = threading.Thread(target=node.on_image, args=(slow_convert, 0.0))
    arriving.start()
    assert started.wait(10)
    resetting = threading.Thread(target=node.reset)  # while the old session's frame is
    resetting.start()                                 # being converted: it waits for it
    time.sleep(0.1)
    finish.set()
    arriving.join(10)
    resetting.join(10)
    assert node.wait_idle()
    assert len(node.localizer) == 0 and node.stats.keyframes == node.stats.dropped_reset == 1
    feed(node, route[0][1:3], 10.0)
    node.close()
    assert len(node.localizer) == 2


def test_a_map_read_from_an_interrupted_save_is_put_back_at_close(tiny_onnx, tmp_path,
                                                                  cpu_only, route) -> None:
    from vpr_edge.index import atomic_dir

    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:3], 0.0)
    node.close()
    old = atomic_dir.sibling(tmp_path / "map", atomic_dir.OLD_SUFFIX)
    (tmp_path / "map").rename(old)  # what a save interrupted at its swap leaves
    node, _ = make_node(tiny_onnx, tmp_path)  # reads it from there; gets no frame
    node.close()
    assert (tmp_path / "map" / "manifest.json").is_file() and not old.exists()


def test_a_frame_with_the_last_frames_stamp_is_skipped(tiny_onnx, tmp_path, cpu_only,
                                                       route) -> None:
    """A one-frame bag played in a loop (or a driver republishing) gave loops of a frame
    with itself (query_stamp == match_stamp), which a back end takes as one graph node."""
    loops: list = []
    config = NodeConfig(model=str(tiny_onnx), map_dir=str(tmp_path / "map"),
                        detector=LoopClosureConfig(min_score=0.999, exclusion_frames=2,
                                                   consistency=1))
    loc = Localizer(tiny_onnx, config.map_dir, backend="onnxruntime-cpu")
    node = LoopClosureNode(config, loops.append, localizer=loc)
    for _ in range(10):
        node.on_image(lambda: route[0][0], stamp=5.0)
        assert node.wait_idle()
    assert node.stats.processed == 1 and loops == []
    assert node.stats.problems == {"duplicate image stamp": 9}
    # time going back is not a duplicate: a looped bag's next pass is processed
    node.on_image(lambda: route[0][1], stamp=4.0)
    assert node.wait_idle() and node.stats.processed == 2
    summary = node.shutdown(str(tmp_path / "logs" / "today" / "stats.json"))  # folder made
    assert json.loads((tmp_path / "logs" / "today" / "stats.json").read_text()) == summary


def test_odometry_jumping_back_starts_again_and_is_not_out_of_order(tiny_onnx, tmp_path,
                                                                     cpu_only, route) -> None:
    """A looped bag: every pose of the next pass was counted "out of order" (against the last
    pass's newest), and frames whose odometry was late took the last pass's poses."""
    node, _ = make_node(tiny_onnx, tmp_path)
    for i in range(300):
        node.on_pose(i * 0.1, Pose(i * 0.1, 100.0))
    for i in range(50):
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))  # the bag again
    assert node.stats.problems == {}
    assert len(node.poses) == 50 and node.poses.at(10.0) is None  # no pose of the last pass
    node.on_image(lambda: route[0][0], stamp=4.0)
    assert node.wait_idle()
    node.close()
    assert node.localizer.get(0).pose[1] == 0.0


def test_images_jumping_back_start_the_pose_history_again(tiny_onnx, tmp_path, cpu_only,
                                                         route) -> None:
    """A restarted simulator whose camera is up before its odometry: the frames before the
    first new pose took the last run's poses at the same stamps, and kept them in the map.
    Images that merely lag the odometry by seconds keep their poses."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=1))
    for i in range(300):  # 30 s along x
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    for i, stamp in ((0, 26.0), (1, 27.0)):  # 2.9-3.9 s behind the odometry: no restart
        assert node.on_image(lambda i=i: route[0][i], stamp=stamp) and node.wait_idle()
    assert len(node.poses) == 300
    assert node.on_image(lambda: route[0][2], stamp=0.5)  # the simulator restarted
    assert node.wait_idle() and len(node.poses) == 0
    node.on_pose(1.0, Pose(100.0, 100.0))  # the new run's first odometry
    assert node.on_image(lambda: route[0][3], stamp=1.0) and node.wait_idle()
    node.close()
    poses = [node.localizer.get(pid).pose for pid in range(4)]
    assert poses[0][0] == pytest.approx(26.0) and poses[1][0] == pytest.approx(27.0)
    assert poses[2] is None and poses[3][:2] == pytest.approx((100.0, 100.0))



def test_one_image_stamped_far_ahead_keeps_the_pose_history(tiny_onnx, tmp_path, cpu_only,
                                                            route) -> None:
    """One image with a corrupt stamp 1000 s ahead, then the camera going on: the next
    image counted as time jumping back and emptied the pose history, so the frames after it
    went into the map without poses until odometry caught up."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=1))
    for i in range(300):  # 30 s along x
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    for i, stamp in enumerate((26.0, 1026.0, 26.5)):
        assert node.on_image(lambda i=i: route[0][i], stamp=stamp) and node.wait_idle()
    assert len(node.poses) == 300
    node.close()
    assert node.localizer.get(2).pose[0] == pytest.approx(26.5)



def test_one_pose_stamped_far_ahead_keeps_the_pose_history(tiny_onnx, tmp_path, cpu_only,
                                                           route) -> None:
    """One odometry message with a corrupt stamp 1000 s ahead: the next pose counted as time
    jumping back, emptied the pose history and marked the odometry as restarted. That pose
    is now dropped and counted, and the frames around it keep their poses."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=1))
    for i in range(300):  # 30 s along x
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    node.on_pose(1029.95, Pose(-1.0, -1.0))
    node.on_pose(30.0, Pose(30.0, 0.0))
    assert len(node.poses) == 301 and not node._poses_restarted
    assert node.stats.problems == {"odometry stamp far ahead": 1}
    assert node.on_image(lambda: route[0][0], stamp=29.95) and node.wait_idle()
    node.close()
    assert node.localizer.get(0).pose[0] == pytest.approx(29.95)


def _drive(node: LoopClosureNode, frames, lag: float, seconds: float = 8.0,
           odometry_hz: int = 50) -> None:
    """0.5 m/s along x: 30 Hz images, odometry delivered ``lag`` seconds after its stamp,
    every message in the order it arrives."""
    hz = odometry_hz
    events = [(i / 30, 1, i) for i in range(int(seconds * 30))]
    events += [(i / hz + lag, 0, i) for i in range(int(seconds * hz))]
    for _, kind, i in sorted(events):
        if kind:
            node.on_image(lambda i=i: frames[i % len(frames)], stamp=i / 30)
        else:
            node.on_pose(i / hz, Pose(0.5 * i / hz, 0.0))
        while node._mailbox or node._busy:  # a keyframe at a time (none is lost)
            time.sleep(0.001)
    assert node.wait_idle()


@pytest.mark.parametrize("lag", [0.0, 0.08, 0.12, 0.3])
def test_odometry_trailing_the_camera_keeps_motion_keyframes_and_poses(tiny_onnx, tmp_path,
                                                                       cpu_only, route, lag):
    """VIO or an EKF trails the camera by 50-150 ms. Each frame took its pose on arrival, so
    it had none: keyframe_every_n (1) decided, and 4 m at 0.5 m/s with 1 m keyframes made 240
    keyframes without a pose at 120 ms of lag (44 at 80 ms), instead of 4 with poses."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    _drive(node, route[0], lag)
    node.close()
    poses = [node.localizer.get(pid).pose for pid in node.localizer.index.ids()]
    assert node.stats.keyframes == len(poses) == 4, node.stats.summary()
    assert [round(p[0], 3) for p in poses] == [0.0, 1.0, 2.0, 3.0]
    assert "no odometry at a frame" not in node.stats.problems


def test_keyframes_one_pose_decides_together_are_all_processed(tiny_onnx, tmp_path, cpu_only,
                                                               route) -> None:
    """10 Hz odometry 80 ms late and a 30 Hz camera: each pose decided three waiting frames
    at once, and keyframes among them replaced each other in the one-slot mailbox while the
    worker was idle (120 keyframes, 39 dropped as busy, at dense motion keyframes)."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=0.03))
    _drive(node, route[0], 0.08, seconds=3.0, odometry_hz=10)
    node.close()
    stats = node.stats
    assert stats.keyframes >= 40 and stats.dropped_busy == 0, stats.summary()
    assert stats.processed == stats.keyframes == len(node.localizer)


def test_a_frame_waits_for_odometry_only_so_long(tiny_onnx, tmp_path, cpu_only, route,
                                                 monkeypatch) -> None:
    """Odometry that stops: the frames after its last pose are decided once they have
    waited POSE_WAIT_SECONDS (by the worker, when no other message comes), without a pose,
    and the node says why; a frame far ahead of the odometry does not wait at all."""
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "POSE_WAIT_SECONDS", 0.2)
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(11):
        node.on_pose(i * 0.1, Pose(i * 0.2, 0.0))  # 2 m in 1 s, then nothing
    node.on_image(lambda: route[0][0], stamp=0.0)
    assert node.on_image(lambda: route[0][1], stamp=1.15)  # waits for odometry
    assert node.stats.keyframes == 1 and len(node._waiting) == 1
    started = time.monotonic()
    assert node.wait_idle() and time.monotonic() - started >= 0.1
    assert node.stats.keyframes == 2 and node.stats.problems["no odometry at a frame"] == 1
    assert node.on_image(lambda: route[0][2], stamp=5.0) and not node._waiting  # far ahead
    node.close()
    poses = [node.localizer.get(pid).pose for pid in node.localizer.index.ids()]
    assert poses[1:] == [None, None]  # (the last one reaches the map before close saves)



def test_keyframes_by_count_get_the_pose_at_their_stamp_from_trailing_odometry(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """Keyframes by count (keyframe_every_n) were decided as they came, with the newest
    pose: odometry 80 ms behind the camera put the pose of 80 ms before on each place (x 0.46
    instead of 0.5 at 0.5 m/s), and at 120 ms (beyond pose_max_gap) none at all. They now
    wait for odometry past their stamp, as motion keyframes do, once there is odometry;
    without any they are decided as they come. Frames one pose decides together all reach
    the worker (10 Hz lidar odometry once decided three at a time, which replaced each other
    in the mailbox: 61 of 90 processed)."""
    node, _ = make_node(tiny_onnx, tmp_path / "camera_only")
    for i in range(5):  # no odometry: nothing to wait for
        assert node.on_image(lambda i=i: route[0][i], stamp=i / 30)
        assert not node._waiting and node.wait_idle()
    node.close()
    assert node.stats.processed == 5
    for lag in (0.08, 0.12):
        node, _ = make_node(tiny_onnx, tmp_path / str(lag),
                            keyframes=KeyframeConfig(every_n=30))
        _drive(node, route[0], lag, seconds=4.0)
        node.close()
        places = [node.localizer.get(pid) for pid in node.localizer.index.ids()]
        assert [p.stamp for p in places] == [0.0, 1.0, 2.0, 3.0]
        assert places[0].pose is None  # the camera came before the first pose
        assert [round(p.pose[0], 3) for p in places[1:]] == [0.5, 1.0, 1.5], lag
    node, _ = make_node(tiny_onnx, tmp_path / "lidar")
    for i in range(30):  # 30 Hz images, 10 Hz odometry 50 ms late
        if i % 3 == 2:
            node.on_pose((i - 2) / 30, Pose(i / 30, 0.0))
        assert node.on_image(lambda i=i: route[0][i % 40], stamp=i / 30)
        while node._mailbox or node._busy:  # the worker keeps up: none is replaced
            time.sleep(0.001)
    node.close()
    assert node.stats.processed == node.stats.keyframes == 30 and node.stats.dropped_busy == 0


def test_a_frame_decided_by_odometry_wakes_wait_idle_and_a_converter_bug_is_counted(
        tiny_onnx, tmp_path, cpu_only, route, monkeypatch) -> None:
    """A frame that a pose decided (from the odometry thread) did not wake wait_idle(), which
    then slept its whole timeout; and a custom converter's exception for that frame came out
    of on_pose (an odometry callback's traceback), uncounted."""
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "POSE_WAIT_SECONDS", 5.0)
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    node.on_pose(0.0, Pose(0.0, 0.0))
    assert node.on_image(lambda: route[0][0], stamp=0.0) and node.wait_idle()
    assert node.on_image(lambda: route[0][1], stamp=0.1) and len(node._waiting) == 1
    threading.Timer(0.1, node.on_pose, (0.2, Pose(0.1, 0.0))).start()  # not a keyframe
    started = time.monotonic()
    assert node.wait_idle() and time.monotonic() - started < 2.0 and not node._waiting

    def buggy():
        raise RuntimeError("a bug in a custom converter")

    assert node.on_image(buggy, stamp=0.25)  # waits for odometry
    node.on_pose(0.3, Pose(2.0, 0.0))  # decides it: a keyframe, whose conversion fails
    assert node.stats.errors == 1 and not node._waiting
    node.close()


def test_images_lagging_odometry_keep_the_new_runs_poses_after_a_jump(tiny_onnx, tmp_path,
                                                                      cpu_only, route) -> None:
    """A looped bag whose images lag the odometry by 1.5 s: the new run's odometry jumped
    back first, and the first new image (1.5 s before its newest pose) cleared those poses,
    so the frames of the first 1.5 s went into the map without one."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(every_n=1))
    for i in range(100):
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    assert node.on_image(lambda: route[0][0], stamp=8.0) and node.wait_idle()
    for i in range(16):  # the bag again: odometry first, up to 1.5 s
        node.on_pose(i * 0.1, Pose(1000.0 + i * 0.1, 0.0))
    assert node.on_image(lambda: route[0][1], stamp=0.0) and node.wait_idle()
    assert len(node.poses) == 16
    node.close()
    assert node.localizer.get(1).pose[0] == pytest.approx(1000.0)


def test_numpy_pose_stamps_are_taken_and_nanoseconds_refused_at_once(tiny_onnx, tmp_path,
                                                                     cpu_only, route) -> None:
    """np.float32 / np.int64 pose stamps were refused ("not finite") after the node had
    moved its newest pose stamp; nanosecond image stamps with exclusion_seconds were queued
    and then failed in the worker, one traceback per keyframe, nothing added."""
    config = NodeConfig(model=str(tiny_onnx), detector=LoopClosureConfig(exclusion_seconds=5.0))
    node = LoopClosureNode(config, lambda loop: None,
                           localizer=Localizer(tiny_onnx, backend="onnxruntime-cpu"))
    node.on_pose(np.int64(1), Pose(0.0, 0.0))
    node.on_pose(np.float32(2.0), Pose(1.0, 0.0))
    assert len(node.poses) == 2 and node.poses.at(2.0).x == 1.0
    with pytest.raises(InvalidInputError, match="not in seconds"):
        node.on_image(lambda: route[0][0], stamp=1.4e18)
    node.close()
    assert node.stats.received == 0 and node.stats.errors == 0


def test_a_pose_stamp_that_is_not_finite_is_refused(tiny_onnx, tmp_path, cpu_only) -> None:
    """A NaN-stamped pose was taken, sat out of order, and handed its pose to frames."""
    node, _ = make_node(tiny_onnx, tmp_path)
    node.on_pose(0.0, Pose(0.0, 0.0))
    for bad in (float("nan"), float("inf"), "1.0", None, True):
        with pytest.raises(InvalidInputError, match="stamp must be finite seconds"):
            node.on_pose(bad, Pose(999.0, 999.0))
    node.on_pose(0.1, Pose(0.1, 0.0))
    assert len(node.poses) == 2 and node.poses.at(0.05).x == pytest.approx(0.05)
    node.close()


def test_the_statistics_keep_a_bounded_window_of_latencies() -> None:
    """Every loop's latency was kept for ever (a node finding 10 loops a second gathered
    11 MB in 10 hours) though the summary reads only the last LATENCY_WINDOW."""
    from vpr_edge.loop_node import LATENCY_WINDOW, NodeStats

    stats = NodeStats()
    for i in range(3 * LATENCY_WINDOW):
        stats.latencies_ms.append(float(i))
    assert len(stats.latencies_ms) == LATENCY_WINDOW
    summary = stats.summary()
    assert summary["latency_ms_p50"] == float(np.median(np.arange(2 * LATENCY_WINDOW,
                                                                  3 * LATENCY_WINDOW)))


def saved_places(tiny_onnx: Path, map_dir: Path) -> int:
    """Places in the map on disk (what a power cut would leave)."""
    if not (map_dir / "manifest.json").exists():
        return 0
    return len(Localizer(tiny_onnx, map_dir, backend="onnxruntime-cpu"))


def hold_the_worker_on(node: LoopClosureNode, frame, stamp: float) -> threading.Event:
    """Feed ``frame`` and hold the worker inside its processing until the returned gate is
    set (the frame is taken, not yet in the map)."""
    real, gate, held = node._process, threading.Event(), threading.Event()
    node._process = lambda item: (held.set(), gate.wait(10), real(item))
    node.on_image(lambda: frame, stamp=stamp)
    assert held.wait(10)
    return gate


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_map_is_saved_while_it_changes_and_when_frames_stop(tiny_onnx, tmp_path,
                                                                cpu_only, route) -> None:
    """Places were only saved at shutdown or on request: a power cut lost the whole
    session's places. Now the worker saves the changed map every autosave_seconds, also
    when frames stop coming (a parked robot), and not while nothing changes."""
    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.3)
    map_dir = tmp_path / "map"
    feed(node, route[0][:5], 0.0)
    # saved within a period, though no frame came after the 5th
    assert wait_for(lambda: node.stats.autosaves >= 1 and not node._changed)
    assert saved_places(tiny_onnx, map_dir) == 5
    saves = node.stats.autosaves
    time.sleep(0.5)
    assert node.stats.autosaves == saves  # nothing changed: nothing saved
    feed(node, route[0][5:8], 1.0)
    assert wait_for(lambda: node.stats.autosaves > saves and not node._changed)
    assert saved_places(tiny_onnx, map_dir) == 8
    node.close()
    assert node.stats.summary()["autosaves"] == node.stats.autosaves >= 2
    assert node.stats.errors == 0 and node.stats.autosave_failures == 0


def test_keyframes_are_processed_while_an_autosave_syncs_and_close_waits_for_it(
        tiny_onnx, tmp_path, cpu_only, route, monkeypatch) -> None:
    """The worker saved the map itself, so no keyframe was processed until the save was
    fsynced (seconds for a large map on an SD card: the keyframes meanwhile were dropped).
    The autosave now runs on its own thread; close() lets it finish, then saves the rest."""
    from vpr_edge.index import atomic_dir

    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.2)
    gate, syncing = threading.Event(), threading.Event()
    real = atomic_dir.fsync_file

    def slow_disk(path):
        if threading.current_thread() is not threading.main_thread():  # not saved_places
            syncing.set()
            gate.wait(10)
        real(path)

    monkeypatch.setattr(atomic_dir, "fsync_file", slow_disk)
    feed(node, route[0][:3], 0.0)
    assert syncing.wait(10)  # the autosave is held in its fsync
    feed(node, route[0][3:5], 1.0)  # (each waits until the worker is idle)
    assert node.stats.processed == 5 and node.stats.autosaves == 0
    closer = threading.Thread(target=node.close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive()  # waiting for the autosave
    gate.set()
    closer.join(10)
    assert not closer.is_alive() and node.stats.autosaves == 1
    assert saved_places(tiny_onnx, tmp_path / "map") == 5 and not node.unsaved_changes



def test_an_autosave_that_failed_is_tried_again_though_its_thread_ends_late(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """The worker woke at the saver's last word, but the saver's thread was still alive (it
    had not returned yet), so the worker took an autosave to be running and waited for a
    frame that never came: with the camera stopped, a failed autosave was not tried again,
    nor were places added during a save saved, until shutdown."""
    from vpr_edge.errors import MapError

    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.2)
    real_save, real_autosave, calls = node.localizer.save, node._autosave_now, []

    def failing_once(*args):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise MapError("disk full")
        return real_save(*args)

    def autosave_then_linger():
        real_autosave()
        time.sleep(0.3)  # the thread ends a little after it said it was done

    node.localizer.save = failing_once
    node._autosave_now = autosave_then_linger
    feed(node, route[0][:3], 0.0)  # then no frame comes
    assert wait_for(lambda: node.stats.autosaves == 1, timeout=5), node.stats.summary()
    assert node.stats.autosave_failures == 1 and not node.unsaved_changes
    node.close()
    assert saved_places(tiny_onnx, tmp_path / "map") == 3


def refuse_autosave_threads(monkeypatch) -> None:
    """Make the autosave's thread fail to start, as Python 3.12 does at interpreter exit."""
    real_start = threading.Thread.start

    def start_at_exit(thread):
        if thread.name == "vpr-edge-autosave":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_at_exit)


def test_no_autosave_starts_once_close_began(tiny_onnx, tmp_path, cpu_only, route,
                                            monkeypatch) -> None:
    """close() saves itself once the worker took the last keyframes; an autosave the worker
    started meanwhile was a second save to wait for, and at interpreter exit (the atexit
    hook's close) Python 3.12 refuses to start a thread: the worker died, logging that the
    node had stopped, and the keyframes it had not taken were dropped."""
    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.2)
    gate = hold_the_worker_on(node, route[0][0], 0.0)
    node.on_image(lambda: route[0][1], stamp=0.1)  # waits in the mailbox
    closer = threading.Thread(target=node.close)
    closer.start()
    time.sleep(0.4)  # an autosave is due by the time the frame is done
    refuse_autosave_threads(monkeypatch)
    gate.set()
    closer.join(10)
    assert not closer.is_alive() and node.failure is None
    assert node.stats.processed == 2 and node.stats.autosaves == 0
    assert saved_places(tiny_onnx, tmp_path / "map") == 2 and not node.unsaved_changes


def test_where_no_thread_can_start_the_worker_autosaves_itself(tiny_onnx, tmp_path, cpu_only,
                                                              route, monkeypatch) -> None:
    """A program whose main thread ended while other threads still fed the node: Python 3.12
    refuses new threads then, and the worker died starting the autosave's."""
    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.2)
    refuse_autosave_threads(monkeypatch)
    feed(node, route[0][:3], 0.0)
    assert wait_for(lambda: node.stats.autosaves == 1) and node.failure is None
    assert saved_places(tiny_onnx, tmp_path / "map") == 3 and not node.unsaved_changes
    feed(node, route[0][3:5], 1.0)
    node.close()
    assert node.stats.processed == 5 and saved_places(tiny_onnx, tmp_path / "map") == 5


def test_autosave_waits_its_period_and_is_off_at_zero(tiny_onnx, tmp_path, cpu_only,
                                                      route) -> None:
    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=30.0)
    feed(node, route[0][:4], 0.0)
    time.sleep(0.3)
    assert node.stats.autosaves == 0 and saved_places(tiny_onnx, tmp_path / "map") == 0
    node.close()  # the shutdown save
    assert saved_places(tiny_onnx, tmp_path / "map") == 4
    for off in (0.0, 1e300):  # (waits past TIMEOUT_MAX raised OverflowError; inf is refused)
        node, _ = make_node(tiny_onnx, tmp_path / str(off), autosave_seconds=off)
        node._last_save -= 1e6  # long ago
        feed(node, route[0][:2], 0.0)
        time.sleep(0.2)
        assert node.stats.autosaves == 0 and node._worker.is_alive()
        node.close()


def test_a_failed_autosave_is_counted_logged_once_and_tried_again(tiny_onnx, tmp_path,
                                                                  cpu_only, route,
                                                                  caplog) -> None:
    from vpr_edge.errors import MapError

    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.2)
    real_save, calls = node.localizer.save, []

    def failing_save(*args):
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise MapError("disk full")
        return real_save(*args)

    node.localizer.save = failing_save
    with caplog.at_level("ERROR", logger="vpr_edge.loop_node"):
        feed(node, route[0][:3], 0.0)
        assert wait_for(lambda: node.stats.autosaves == 1)
    assert node.stats.autosave_failures == 2 and len(calls) == 3
    assert calls[1] - calls[0] >= 0.15  # a period apart, not at once
    assert sum("autosave" in r.getMessage() for r in caplog.records) == 1
    assert "disk full" in caplog.text
    node.close()
    assert saved_places(tiny_onnx, tmp_path / "map") == 3


def test_a_publisher_that_fails_is_counted_once_per_loop(tiny_onnx, tmp_path, cpu_only,
                                                        route, caplog) -> None:
    """A raising publish counted the keyframe as processed and as an error, and logged
    "could not be processed" with a traceback for every loop (the place was in the map)."""
    node, _ = make_node(tiny_onnx, tmp_path)

    def publish(loop) -> None:
        raise RuntimeError("publisher gone")

    node._publish = publish
    first, again = route
    feed(node, first, 0.0)
    feed(node, again, 100.0)
    node.close()
    stats = node.stats
    assert stats.loops > 1 and stats.publish_failures == stats.loops and stats.errors == 0
    assert stats.processed == stats.keyframes == len(node.localizer) == 80
    assert [r.getMessage().startswith("publishing the loop closure") for r in caplog.records
            if r.levelname == "ERROR"] == [True]


def test_frames_after_close_are_refused_not_counted(tiny_onnx, tmp_path, cpu_only,
                                                    route) -> None:
    """They were reported queued (True) and counted as keyframes, with no worker left."""
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:2], 0.0)
    node.close()
    before = node.stats.summary()
    assert node.on_image(lambda: route[0][2], stamp=5.0) is False
    assert node.stats.summary() == before


#: bad input counted in NodeStats.problems that is not a frame's end
ODOMETRY_PROBLEMS = {"no odometry at a frame", "odometry out of order", "bad odometry",
                     "odometry stamp far ahead"}


def assert_every_frame_counted_once(stats) -> None:
    """Each received frame ends in exactly one counter (NodeStats' docstring)."""
    ends = (stats.processed + stats.dropped_policy + stats.dropped_busy + stats.dropped_reset
            + stats.errors + sum(n for kind, n in stats.problems.items()
                                 if kind not in ODOMETRY_PROBLEMS))
    assert ends == stats.received, stats.summary()


def test_frames_waiting_for_odometry_at_close_are_decided_and_reach_the_map(
        tiny_onnx, tmp_path, cpu_only, route, monkeypatch, caplog) -> None:
    """close() forgot the frames still waiting for odometry: counted as received and in no
    other counter, and the last half second of a mapping run never reached the map. Now they
    are decided as when their wait runs out, and the worker takes them before the save."""
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "POSE_WAIT_SECONDS", 5.0)  # (they wait for close)
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(11):
        node.on_pose(i * 0.1, Pose(i * 0.2, 0.0))  # 2 m in 1 s
    for i, stamp in enumerate([0.0, 0.5, 0.7]):  # keyframes at 0 and 1 m, then not one
        assert node.on_image(lambda i=i: route[0][i], stamp=stamp) is (stamp != 0.7)
        assert node.wait_idle()
    for i, stamp in enumerate([1.05, 1.3, 1.35], start=3):  # past the newest pose: they wait
        assert node.on_image(lambda i=i: route[0][i], stamp=stamp)
    assert len(node._waiting) == 3
    with caplog.at_level("WARNING", logger="vpr_edge.loop_node"):
        node.close()
    stats = node.stats
    # 1.05 takes the pose at 1.0 (2 m: a keyframe); 1.3 and 1.35 have none: keyframe_every_n
    assert (stats.received, stats.processed, stats.dropped_policy) == (6, 5, 1), stats.summary()
    assert stats.problems == {"no odometry at a frame": 2}
    assert caplog.records == []  # odometry trailing the last frames is no loss
    assert_every_frame_counted_once(stats)
    assert saved_places(tiny_onnx, tmp_path / "map") == 5
    assert node.on_image(lambda: route[0][6], stamp=2.0) is False  # closed


def test_frames_waiting_for_odometry_at_reset_count_as_dropped_by_it(
        tiny_onnx, tmp_path, cpu_only, route, monkeypatch) -> None:
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "POSE_WAIT_SECONDS", 5.0)
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(11):
        node.on_pose(i * 0.1, Pose(i * 0.2, 0.0))
    assert node.on_image(lambda: route[0][0], stamp=0.0) and node.wait_idle()
    assert node.on_image(lambda: route[0][1], stamp=1.05)
    assert node.on_image(lambda: route[0][2], stamp=1.1)
    assert len(node._waiting) == 2
    node.reset()
    assert not node._waiting and node.stats.dropped_reset == 2
    node.on_pose(10.0, Pose(0.0, 0.0))  # the new session
    assert node.on_image(lambda: route[0][3], stamp=10.0) and node.wait_idle()
    node.close()
    assert (node.stats.received, node.stats.processed) == (4, 2)
    assert_every_frame_counted_once(node.stats)


def test_odometry_lost_and_back_are_said_once_per_outage(tiny_onnx, tmp_path, cpu_only,
                                                         route, monkeypatch, caplog) -> None:
    """"no odometry at a frame" was logged once per process: a camera up before the
    odometry spent it, and odometry that died later in the run showed only in a counter."""
    from vpr_edge import loop_node

    monkeypatch.setattr(loop_node, "POSE_WAIT_SECONDS", 0.0)  # decided as they come
    node, _ = make_node(tiny_onnx, tmp_path, pose_max_gap=0.05,
                        keyframes=KeyframeConfig(every_n=5, min_distance=1.0))

    def has_odometry(step: int) -> bool:  # from 0.0 s on, but not in 1.1-1.9 s and 3.1-3.6 s
        return step >= 0 and not (11 <= step <= 19 or 31 <= step <= 36)

    with caplog.at_level("INFO", logger="vpr_edge.loop_node"):
        for step in range(-3, 50):  # 10 Hz, poses at the frames' stamps
            stamp = step / 10
            if has_odometry(step):
                node.on_pose(stamp, Pose(stamp, 0.0))
            node.on_image(lambda s=step: route[0][s % 40], stamp=stamp)
            assert node.wait_idle()
    node.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    start = [m for level, m in lines if m.startswith("no odometry at a frame")]
    lost = [(level, m) for level, m in lines if m.startswith("odometry lost")]
    back = [(level, m) for level, m in lines if m.startswith("odometry is back")]
    assert len(start) == 1 and "newest odometry: none yet" in start[0]  # the camera's start
    assert [level for level, _ in lost] == ["WARNING", "WARNING"], lines
    assert "frame stamped 1.100 (newest odometry: 1.000 s)" in lost[0][1]
    assert "frame stamped 3.100 (newest odometry: 3.000 s)" in lost[1][1]
    assert [level for level, _ in back] == ["INFO", "INFO"], lines
    assert "stamped 2.000: 9 frame(s)" in back[0][1] and "stamped 3.700: 6 frame(s)" in back[1][1]
    assert node.stats.problems == {"no odometry at a frame": 3 + 9 + 6}
    assert_every_frame_counted_once(node.stats)


def test_sparse_odometry_is_no_outage(tiny_onnx: Path, tmp_path: Path, cpu_only,
                                      caplog) -> None:
    """4 Hz odometry (or 10 Hz losing two messages) leaves frames more than pose_max_gap
    from any pose with newer odometry there: each such gap was logged as "odometry lost ...
    has it stopped?" and "odometry is back", 22 lines in 3 s. A gap is counted (logged once),
    not an outage."""
    import logging

    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    frame = np.full((24, 32, 3), 100, np.uint8)
    caplog.set_level(logging.INFO, logger="vpr_edge")
    for i in range(60):  # 3 s: camera at 20 Hz, odometry at 4 Hz
        stamp = i * 0.05
        if i % 5 == 0:
            node.on_pose(stamp, Pose(stamp, 0.0))
        node.on_image(lambda: frame, stamp=stamp)
    node.on_pose(3.0, Pose(3.0, 0.0))  # the odometry goes on past the last frame
    node.wait_idle()
    node.close()
    said = [r.getMessage() for r in caplog.records if "odometry" in r.getMessage()]
    assert not [line for line in said if "lost" in line or "is back" in line], said
    assert node.stats.problems["no odometry at a frame"] > 10
    assert_every_frame_counted_once(node.stats)


def test_close_from_the_publish_callback_saves_the_map(tiny_onnx: Path, tmp_path: Path,
                                                       cpu_only) -> None:
    """A publish callback that closes the node ("stop at the first loop closure") runs on the
    worker's thread: close() waited 2 s for that worker, then failed to join its own thread
    (counted as a publish failure), and the map was never saved."""
    closed: list = []

    def publish(loop) -> None:
        tic = time.monotonic()
        node.close()
        closed.append(time.monotonic() - tic)

    config = NodeConfig(model=str(tiny_onnx), map_dir=str(tmp_path / "map"),
                        detector=LoopClosureConfig(min_score=0.5, exclusion_frames=1,
                                                   consistency=1))
    node = LoopClosureNode(config, publish,
                           localizer=Localizer(tiny_onnx, config.map_dir,
                                               backend="onnxruntime-cpu"))
    frame = np.full((24, 32, 3), 100, np.uint8)
    for i in range(5):
        if not node.on_image(lambda: frame, i * 10.0):
            break
        node.wait_idle(5)
    node._worker.join(5)
    assert len(closed) == 1 and closed[0] < 1.0, closed
    assert node.stats.publish_failures == 0 and not node._worker.is_alive()
    assert len(Localizer(tiny_onnx, config.map_dir, backend="onnxruntime-cpu")) == \
        node.stats.processed


def test_ctrl_c_while_a_frame_converts_is_no_error(tiny_onnx: Path, tmp_path: Path,
                                                   cpu_only) -> None:
    """A ROS 2 node's SIGINT raises KeyboardInterrupt wherever its thread is, a frame's
    conversion too: it was counted in errors (a converter's bug), so a clean Ctrl-C
    reported one."""
    node, _ = make_node(tiny_onnx, tmp_path)
    node.on_image(lambda: np.full((24, 32, 3), 9, np.uint8), 1.0)
    node.wait_idle()

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        node.on_image(interrupted, 1.1)
    summary = node.shutdown()
    assert summary["errors"] == 0 and summary["dropped_busy"] == 1, summary
    assert_every_frame_counted_once(node.stats)


def test_a_map_with_longer_poses_than_the_node_stores_is_refused_at_start(
        tiny_onnx: Path, tmp_path: Path, cpu_only) -> None:
    """A map whose poses have 85 values (a flattened Odometry, as earlier versions stored)
    opens again; the node would then refuse every place it adds (7-value poses), each an
    error with a traceback, and never add one. It is refused at start, naming the fix."""
    from vpr_edge.errors import MapError

    map_dir = tmp_path / "map"
    with Localizer(tiny_onnx, map_dir, backend="onnxruntime-cpu") as loc:
        loc.add(np.full((24, 32, 3), 50, np.uint8), stamp=1.0, pose=[0.5] * 85)
        loc.save()
    config = NodeConfig(model=str(tiny_onnx), map_dir=str(map_dir))
    with pytest.raises(MapError, match="poses have 85 values, but the node stores 7.*map_dir"):
        LoopClosureNode(config, lambda loop: None)
    assert len(Localizer(tiny_onnx, map_dir, backend="onnxruntime-cpu")) == 1


def test_stop_without_saving_stops_the_worker_and_counts_every_frame(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """A second Ctrl-C cut close() short (ROS 2 node): the worker went on in native code as
    the process ended. stop_without_saving() stops it after its frame, counts the frames it
    had not taken as dropped, leaves the map on disk as it was, and refuses new frames."""
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:3], 0.0)
    node.save()
    gate = hold_the_worker_on(node, route[0][3], 0.3)
    node.on_image(lambda: route[0][4], stamp=0.4)  # waiting in the mailbox
    stopper = threading.Thread(target=node.stop_without_saving)
    stopper.start()
    time.sleep(0.2)
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive() and not node._worker.is_alive()
    assert node.unsaved_changes  # the frame it was processing went in, unsaved
    assert not node.on_image(lambda: route[0][5], stamp=0.5)
    assert (node.stats.processed, node.stats.dropped_busy) == (4, 1)
    assert_every_frame_counted_once(node.stats)
    assert saved_places(tiny_onnx, tmp_path / "map") == 3


def test_stop_without_saving_during_close_on_another_thread_is_not_saved(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """close() on one thread waits for the worker; stop_without_saving() on another (a
    signal handler, a supervisor) means the map must stay as saved: close() saved it anyway
    once its wait ended."""
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:3], 0.0)
    node.save()
    gate = hold_the_worker_on(node, route[0][3], 0.3)
    closer = threading.Thread(target=node.close)
    closer.start()
    time.sleep(0.2)  # close() is waiting for the worker
    stopper = threading.Thread(target=node.stop_without_saving)
    stopper.start()
    time.sleep(0.1)
    gate.set()
    for thread in (closer, stopper):
        thread.join(10)
        assert not thread.is_alive()
    assert node.unsaved_changes and node.stats.processed == 4
    assert saved_places(tiny_onnx, tmp_path / "map") == 3


def test_a_second_ctrl_c_in_shutdown_writes_statistics_that_add_up(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """A second Ctrl-C that cut shutdown() short (in the drain or the save) left its
    ``stats_file`` with the keyframes still in the mailbox, and the one the worker was
    processing, in no counter (received 5, processed 3): the node then stopped without
    saving and counted them, but the file was already written. Now the node stops first."""
    node, _ = make_node(tiny_onnx, tmp_path)
    feed(node, route[0][:3], 0.0)
    gate = hold_the_worker_on(node, route[0][3], 0.3)
    node.on_image(lambda: route[0][4], stamp=0.4)  # waiting in the mailbox

    def ctrl_c_again(timeout: float = 10.0) -> bool:  # lands in the drain
        gate.set()
        raise KeyboardInterrupt

    node.wait_idle = ctrl_c_again
    stats_file = tmp_path / "stats.json"
    with pytest.raises(KeyboardInterrupt):
        node.shutdown(str(stats_file))
    assert not node._worker.is_alive()
    written = json.loads(stats_file.read_text())
    assert written == node.stats.summary()
    assert (written["received"], written["processed"], written["dropped_busy"]) == (5, 4, 1)
    assert_every_frame_counted_once(node.stats)
    assert saved_places(tiny_onnx, tmp_path / "map") == 0  # not saved: Ctrl-C meant stop


def test_one_pose_stamped_far_ahead_does_not_decide_the_frames_waiting_for_odometry(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """Odometry trailing the camera, and one pose with a corrupt stamp 1000 s ahead: the
    frames waiting for their odometry took it for odometry past their stamps, and were
    decided at once, without a pose (keyframe_every_n, "no odometry at a frame"), a pose
    before the odometry went on from where it was."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(300):  # 30 s along x, up to 29.9 s
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    assert node.on_image(lambda: route[0][0], stamp=30.15)  # waits for the odometry
    node.on_pose(1030.0, Pose(-1.0, -1.0))
    assert len(node._waiting) == 1
    node.on_pose(30.0, Pose(30.0, 0.0))
    node.on_pose(30.1, Pose(30.1, 0.0))
    node.on_pose(30.2, Pose(30.2, 0.0))
    assert node.wait_idle()
    node.close()
    assert "no odometry at a frame" not in node.stats.problems, node.stats.summary()
    assert node.localizer.get(0).pose[0] == pytest.approx(30.15)


def test_stop_without_saving_during_a_frame_does_not_autosave_after_it(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """stop_without_saving() while the worker processed a frame, with an autosave due: the
    worker finished the frame, then autosaved the map that was to stay as it was."""
    node, _ = make_node(tiny_onnx, tmp_path, autosave_seconds=0.3)
    feed(node, route[0][:3], 0.0)
    node.save()
    gate = hold_the_worker_on(node, route[0][3], 0.3)
    stopper = threading.Thread(target=node.stop_without_saving)
    stopper.start()
    time.sleep(0.5)  # the autosave is due by the time the frame is done
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive() and not node._worker.is_alive()
    assert node.unsaved_changes and node.stats.processed == 4 and node.stats.autosaves == 0
    assert saved_places(tiny_onnx, tmp_path / "map") == 3


def test_a_frame_after_odometry_that_leapt_ahead_waits_for_its_next_pose(
        tiny_onnx, tmp_path, cpu_only, route) -> None:
    """Odometry paused for 1000 s (a leap that the next pose follows: time passed): a frame
    just after its first pose back waits for the next one, as after any other pose."""
    node, _ = make_node(tiny_onnx, tmp_path, keyframes=KeyframeConfig(min_distance=1.0))
    for i in range(300):  # 30 s along x, up to 29.9 s
        node.on_pose(i * 0.1, Pose(i * 0.1, 0.0))
    node.on_pose(1030.0, Pose(1030.0, 0.0))
    assert node.on_image(lambda: route[0][0], stamp=1030.15)  # waits for the odometry
    assert len(node._waiting) == 1
    node.on_pose(1030.1, Pose(1030.1, 0.0))
    node.on_pose(1030.2, Pose(1030.2, 0.0))
    assert node.wait_idle()
    node.close()
    assert node.stats.problems == {}, node.stats.summary()
    assert node.localizer.get(0).pose[0] == pytest.approx(1030.15)
