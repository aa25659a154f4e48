"""The vpr-edge command line on a tiny model and generated image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_edge.cli import main


def write_route(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"Image{i:03d}.png")
    return folder


def build_map_of(model: Path, map_dir: Path, images: Path) -> None:
    """``vpr-edge map build`` of a folder, which must succeed."""
    assert main(["map", "build", str(model), str(map_dir), "--images", str(images),
                 "--no-progress"]) == 0


@pytest.fixture
def routes(tmp_path: Path, tiny) -> tuple[Path, Path]:
    """Two traversals: the second is the first with mild noise (same place = same number)."""
    rng = np.random.default_rng(0)
    first = tiny.frames(30, seed=21, h=24, w=32)
    noisy = np.clip(first.astype(int) + rng.integers(-6, 7, first.shape), 0, 255)
    return (write_route(tmp_path / "run1", first),
            write_route(tmp_path / "run2", noisy.astype(np.uint8)))


def test_map_build_resumes_without_duplicates(tiny_onnx: Path, routes, tmp_path: Path,
                                              cpu_only: None, capsys) -> None:
    run1, _ = routes
    map_dir = tmp_path / "map"
    out = tmp_path / "build.json"
    args = ["map", "build", str(tiny_onnx), str(map_dir), "--images", str(run1),
            "--no-progress", "--save-every", "7", "--json", str(out)]
    assert main(args) == 0
    first = json.loads(out.read_text())
    assert first["added"] == 30 and first["places"] == 30
    assert main(args) == 0
    again = json.loads(out.read_text())
    assert again["added"] == 0 and again["already_in_map"] == 30 and again["places"] == 30
    assert "vpr-edge map build" in capsys.readouterr().out


def test_map_build_rebuilds_a_new_graph_in_random_order(tiny_onnx: Path, routes,
                                                        tmp_path: Path, cpu_only: None) -> None:
    from vpr_edge.cli.map_build import build_map
    from vpr_edge.index import IndexSettings, PlaceIndex
    from vpr_edge.sources import folder_source

    run1, run2 = routes
    settings = IndexSettings(mode="hnsw")
    map_dir = tmp_path / "map"
    first = build_map(tiny_onnx, map_dir, folder_source(run1), progress=False,
                      index_settings=settings)
    assert first["added"] == 30 and first["graph_rebuild_seconds"] is not None
    index = PlaceIndex.open(map_dir)
    assert index.ids() == list(range(30))  # ids and records keep the route order
    assert [index.get(i).meta["index"] for i in range(30)] == list(range(30))
    # a rerun adds nothing: no rebuild; --no-rebuild keeps the route-order graph
    again = build_map(tiny_onnx, map_dir, folder_source(run1), progress=False)
    assert again["added"] == 0 and again["graph_rebuild_seconds"] is None
    kept = build_map(tiny_onnx, map_dir, folder_source(run2), progress=False,
                     rebuild=False)
    assert kept["added"] == 30 and kept["graph_rebuild_seconds"] is None


def test_map_build_stores_non_utf8_file_names(tiny_onnx: Path, tmp_path: Path, tiny,
                                              cpu_only: None) -> None:
    """A file name that is not UTF-8 (Linux allows any bytes) is stored escaped, so the map
    saves, and a rerun recognises the frame as already in the map."""
    import os

    from vpr_edge.cli.map_build import build_map
    from vpr_edge.index import PlaceIndex
    from vpr_edge.sources import folder_source

    folder = write_route(tmp_path / "run", tiny.frames(3, seed=4, h=24, w=32))
    odd = os.fsencode(folder) + b"/Image\xff.png"
    os.rename(folder / "Image001.png", odd)
    map_dir = tmp_path / "map"
    assert build_map(tiny_onnx, map_dir, folder_source(folder), progress=False)["added"] == 3
    keys = {PlaceIndex.open(map_dir).get(i).meta["source"] for i in range(3)}
    assert os.fsencode(folder).decode() + "/Image\\xff.png" in keys
    again = build_map(tiny_onnx, map_dir, folder_source(folder), progress=False)
    assert again["added"] == 0 and again["already_in_map"] == 3


def test_query_localize_and_info(tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None,
                                 capsys) -> None:
    run1, run2 = routes
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, run1)
    out = tmp_path / "q.json"
    assert main(["query", str(tiny_onnx), str(map_dir), str(run2 / "Image007.png"), "-k", "2",
                 "--json", str(out)]) == 0
    matches = json.loads(out.read_text())
    assert matches[0]["source"] == str(run1 / "Image007.png") and matches[0]["rank"] == 1
    loc_json = tmp_path / "loc.json"
    assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt",
                 "names", "--no-progress", "--json", str(loc_json)]) == 0
    summary = json.loads(loc_json.read_text())
    assert summary["frames"] == 30 and summary["recall@1"] >= 0.9
    assert summary["query_ms_p50"] > 0 and summary["decode_ms_p50"] > 0
    # positions cannot be scored against a map without poses: an error, not recall 0
    assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt",
                 "positions", "--no-progress"]) == 2
    assert "have no poses" in capsys.readouterr().err
    # a folder given to `query` was "truncated, damaged or not an image"
    assert main(["query", str(tiny_onnx), str(map_dir), str(run2)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "vpr-edge localize" in err
    # out-of-range ground truth and save intervals were taken (nothing could be correct)
    for bad in (["--gt-tolerance", "-1"], ["--gt-radius", "0"], ["--gt-radius", "nan"]):
        assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt",
                     "names", "--no-progress", *bad]) == 2
        assert bad[0] in capsys.readouterr().err
        assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2), "--gt",
                     "names", "--no-progress", *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "other"), "--images",
                 str(run1), "--save-every", "0", "--no-progress"]) == 2
    assert "--save-every must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    info_json = tmp_path / "info.json"
    assert main(["info", str(map_dir), "--json", str(info_json)]) == 0
    facts = json.loads(info_json.read_text())
    assert facts["places"] == 30 and facts["next_id"] == 30
    from vpr_edge.index import map_format  # when it was saved: what a crash lost since
    manifest = json.loads((map_dir / map_format.MANIFEST_NAME).read_text())
    assert facts["saved_at"] == manifest["updated_at"] and facts["saved_at"].startswith("20")
    assert main(["info", str(tiny_onnx)]) == 0
    assert "tiny-test" in capsys.readouterr().out


def test_loops_sweep_over_a_sequence_shorter_than_the_window(tiny_onnx: Path, routes,
                                                            tmp_path: Path, cpu_only: None,
                                                            caplog, capsys) -> None:
    """An exclusion window as long as the sequence leaves no frame a candidate, and --sweep
    ended in a raw IndexError. One folder with --gt names has no ground truth at all: a
    warning says so."""
    run1, run2 = routes
    assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2), "--gt", "names",
                 "--exclusion-frames", "60", "--sweep", "--no-progress"]) == 2
    assert "no frame had a candidate outside the exclusion window" in capsys.readouterr().err
    # a time window that holds every frame is named too, not only the frame window of 0
    listed = tmp_path / "frames.csv"
    frames = [*sorted(run1.iterdir()), *sorted(run2.iterdir())]
    listed.write_text("image,timestamp\n" + "".join(f"{p},{i * 0.1}\n"
                                                    for i, p in enumerate(frames)))
    assert main(["loops", str(tiny_onnx), "--list", str(listed), "--gt", "names",
                 "--exclusion-frames", "0", "--exclusion-seconds", "60", "--sweep",
                 "--no-progress"]) == 2
    assert "--exclusion-frames 0, --exclusion-seconds 60" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="vpr_edge"):
        assert main(["loops", str(tiny_onnx), "--images", str(run1), "--gt", "names",
                     "--no-progress"]) == 0
    assert "no frame of this sequence has a ground-truth loop" in caplog.text


def test_loops_warn_of_a_stuck_clock_with_a_time_window(tiny_onnx: Path, routes,
                                                       tmp_path: Path, cpu_only: None,
                                                       caplog) -> None:
    """A camera whose header stamp was stuck: --exclusion-seconds 3 found no loop (every
    frame excluded the others), and nothing said why."""
    run1, run2 = routes
    frames = [*sorted(run1.iterdir()), *sorted(run2.iterdir())]
    listed = tmp_path / "frames.csv"
    listed.write_text("image,timestamp\n" + "".join(f"{p},{min(i, 9)}\n"  # stuck at 9 s
                                                    for i, p in enumerate(frames)))
    with caplog.at_level("WARNING", logger="vpr_edge"):
        assert main(["loops", str(tiny_onnx), "--list", str(listed), "--exclusion-seconds",
                     "3", "--no-progress"]) == 0
    assert "50 of 60 frames have the stamp of the frame before them" in caplog.text
    for no_window in ([], ["--exclusion-seconds", "0"]):  # frames stamped alike stay candidates
        caplog.clear()
        with caplog.at_level("WARNING", logger="vpr_edge"):
            assert main(["loops", str(tiny_onnx), "--list", str(listed), "--no-progress",
                         *no_window]) == 0
        assert "stamp of the frame before" not in caplog.text


def test_loops_refuse_nanosecond_stamps_at_the_first_frame(tiny_onnx: Path, routes,
                                                          tmp_path: Path, cpu_only: None,
                                                          capsys, monkeypatch) -> None:
    """EuRoC-style nanosecond stamps with --exclusion-seconds were refused only after every
    frame was described (hours on a long sequence)."""
    from vpr_edge.cli import loops

    run1, _ = routes
    listed = tmp_path / "frames.csv"
    first_ns = 1403636579763555584
    listed.write_text("image,timestamp\n" + "".join(
        f"{p},{first_ns + i * 50_000_000}\n" for i, p in enumerate(sorted(run1.iterdir()))))
    described = []
    monkeypatch.setattr(loops, "_check_frame", lambda *a, f=loops._check_frame: (
        described.append(1), f(*a))[1])
    assert main(["loops", str(tiny_onnx), "--list", str(listed), "--exclusion-seconds", "5",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "frame 0" in err and "not in seconds" in err and len(described) == 1


def test_loops_refuse_file_names_without_frame_numbers_before_describing(
        tiny_onnx: Path, routes, cpu_only: None, capsys, monkeypatch) -> None:
    """With --gt names, a folder of numbered frames and one start.jpg was refused only after
    every frame was described (17 s for 1500 frames): now before the model is opened."""
    import vpr_edge.localizer
    from vpr_edge.cli import loops

    run1, run2 = routes
    (run2 / "start.png").write_bytes((run2 / "Image000.png").read_bytes())
    opened, described = [], []
    monkeypatch.setattr(vpr_edge.localizer, "Localizer",
                        lambda *a, f=vpr_edge.localizer.Localizer, **k: (opened.append(1),
                                                                         f(*a, **k))[1])
    monkeypatch.setattr(loops, "_check_frame", lambda *a, f=loops._check_frame: (
        described.append(1), f(*a))[1])
    assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2), "--gt", "names",
                 "--no-progress"]) == 2
    assert "start.png: no frame number in the file name" in capsys.readouterr().err
    assert not opened and not described
    # without --gt names, the names are not asked for
    assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2),
                 "--no-progress"]) == 0
    assert len(opened) == 1 and len(described) == 61


def test_loops_with_ground_truth_and_sweep(tiny_onnx: Path, routes, tmp_path: Path,
                                           cpu_only: None, capsys) -> None:
    run1, run2 = routes
    summary_path = tmp_path / "loops.json"
    csv_path = tmp_path / "loops.csv"
    assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2), "--gt", "names",
                 "--min-score", "0.9997", "--exclusion-frames", "10", "--consistency", "2",
                 "--sweep", "--no-progress", "--json", str(summary_path),
                 "--csv", str(csv_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 60
    scored = summary["at_min_score_0.9997"]
    assert scored["frames_with_loop"] == 30  # every frame of the second run revisits
    # the tiny test model is crude: random frames of one run look alike to it, so only a
    # high threshold is precise; this checks the plumbing, not the model
    assert scored["precision"] == 1.0 and scored["recall"] >= 0.7
    assert 0.5 <= summary["recall_at_100_precision"] <= 1.0
    printed = capsys.readouterr().out  # a table, not a Python dict
    assert "at_min_score_0.9997.precision" in printed and "{" not in printed
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 61 and rows[0].startswith("index,source")
    assert main(["loops", str(tiny_onnx), "--images", str(run1), str(run2), "--gt", "names",
                 "--sweep"]) == 0
    assert "sweep: " in capsys.readouterr().err  # 25 detector passes had no progress bar


def test_bad_arguments_are_clear_errors(tiny_onnx: Path, tmp_path: Path, cpu_only: None,
                                        capsys) -> None:
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "m"), "--images",
                 str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vpr-edge map build: error:" in err and "nowhere: no such folder" in err
    a_file = tmp_path / "frame.png"
    a_file.write_bytes(b"x")
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "m"), "--images",
                 str(a_file), "--no-progress"]) == 2
    assert "is a file, not a folder of images; for single image files use --list" in \
        capsys.readouterr().err
    assert main(["query", str(tiny_onnx), str(tmp_path / "nomap"), "x.png"]) == 2
    assert "no such map" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "absent.onnx")]) == 2
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not a model")
    assert main(["info", str(tmp_path / "photo.png")]) == 2
    assert "neither an ONNX model" in capsys.readouterr().err
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "Image000.png")
    assert main(["loops", str(tiny_onnx), "--images", str(folder), "--sweep",
                 "--no-progress"]) == 2  # it used to be ignored without ground truth
    assert "--sweep scores each threshold against ground truth" in capsys.readouterr().err


def test_a_path_that_holds_no_map_and_bad_bench_counts(tiny_onnx: Path, routes,
                                                       tmp_path: Path, cpu_only: None,
                                                       capsys) -> None:
    """`query` and `localize` given an image or an empty folder where the map goes printed
    "(nothing)" / recall 0 and exited 0 (the Localizer starts an empty map there)."""
    image = next(routes[0].iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (image, empty):
        assert main(["query", str(tiny_onnx), str(where), str(image)]) == 2
        assert "no such map" in capsys.readouterr().err
        assert main(["localize", str(tiny_onnx), str(where), "--images", str(routes[0]),
                     "--no-progress"]) == 2
        assert "no such map" in capsys.readouterr().err
    assert main(["bench", str(tiny_onnx), "--repeat", "0"]) == 2
    assert "--repeat must be at least 1" in capsys.readouterr().err
    assert main(["bench", str(tiny_onnx), "--places", "-5"]) == 2
    assert "--places must be 0 or more" in capsys.readouterr().err
    upper = tmp_path / "MODEL.ONNX"
    upper.write_bytes(tiny_onnx.read_bytes())
    assert main(["info", str(upper)]) == 0


@pytest.mark.parametrize("command", [["map", "build"], ["map", "repair"], ["localize"],
                                     ["loops"], ["bench"],
                                     ["query"], ["info"]])
def test_help_describes_each_command_in_plain_text(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and len(out.splitlines()) > 3


def test_map_build_into_an_empty_directory(tiny_onnx: Path, routes, tmp_path: Path,
                                           cpu_only: None) -> None:
    target = tmp_path / "maps" / "new"
    target.mkdir(parents=True)
    build_map_of(tiny_onnx, target, routes[0])
    assert (target / "manifest.json").is_file()


def test_batch_is_an_option_where_frames_are_batched(tiny_onnx: Path, routes, tmp_path: Path,
                                                     cpu_only: None, monkeypatch) -> None:
    from vpr_edge.localizer import Localizer

    run1, run2 = routes
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, run1)
    calls: list[tuple[int, int]] = []
    real_infer = Localizer._infer
    monkeypatch.setattr(Localizer, "_infer", lambda self, batch: calls.append(
        (len(batch), self._batch_size)) or real_infer(self, batch))
    images = [str(p) for p in sorted(run2.iterdir())[:5]]
    assert main(["query", str(tiny_onnx), str(map_dir), *images, "--batch", "2"]) == 0
    assert calls == [(2, 2), (2, 2), (1, 2)]  # five frames, two at a time (it used 8)
    for command in (["localize", str(tiny_onnx), str(map_dir), "--images", str(run2)],
                    ["bench", str(tiny_onnx)]):
        with pytest.raises(SystemExit):  # one frame per query: no --batch to be ignored
            main([*command, "--batch", "2"])

def test_bench_reports_every_stage(tiny_onnx: Path, tmp_path: Path, cpu_only: None,
                                   capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_onnx), "--places", "500", "--repeat", "5",
                 "--frame-size", "48", "64", "--json", str(out)]) == 0
    assert "bench: stages" in capsys.readouterr().err  # a progress bar (it ran silent)
    assert main(["bench", str(tiny_onnx), "--places", "500", "--repeat", "5",
                 "--frame-size", "48", "64", "--no-progress"]) == 0
    assert "bench: stages" not in capsys.readouterr().err
    result = json.loads(out.read_text())
    stages = {row["stage"]: row for row in result["stages"]}
    assert set(stages) == {"preprocess", "inference", "search", "query (end to end)",
                           "describe", "add"}
    assert all(row["p50_ms"] > 0 for row in stages.values())
    assert result["places"] == 500


def test_map_build_from_a_bag_stores_stamps_and_poses(tiny_onnx: Path, tiny, tmp_path: Path,
                                                      cpu_only: None, bag_writer) -> None:
    from vpr_edge import Localizer

    frames = list(tiny.frames(8, seed=3, h=24, w=32))
    bag = bag_writer.write_bag(tmp_path / "run.bag", frames, odometry=True)
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--bag", str(bag), "--topic",
                 bag_writer.IMAGE_TOPIC, "--pose-topic", bag_writer.ODOM_TOPIC,
                 "--every", "2", "--no-progress"]) == 0
    loc = Localizer(tiny_onnx, map_dir, backend="cpu")
    assert len(loc) == 4
    records = sorted((loc.get(i) for i in loc.index.ids()), key=lambda r: r.stamp)
    assert [r.pose[0] for r in records] == [0.0, 2.0, 4.0, 6.0]
    assert records[1].stamp == pytest.approx(1000.2)
    # frames are numbered by position after --every (as for folders); keys keep the topic's
    assert [r.meta["index"] for r in records] == [0, 1, 2, 3]
    assert [r.meta["source"].rsplit(":", 1)[1] for r in records] == ["0", "2", "4", "6"]
    # the header stamps exactly (a node's loops to these places publish them)
    assert [r.meta["ros_stamp"] for r in records] == [[1000, n * 200_000_000] for n in range(4)]


def test_localize_a_compressed_bag_with_a_slow_pose_topic(tiny_onnx: Path, tiny,
                                                          tmp_path: Path, cpu_only: None,
                                                          bag_writer, capsys) -> None:
    """--pose-max-gap reaches the bag reader (poses at 2 Hz for frames at 10 Hz), the
    decode time of a bag frame is measured (it was 0.0: the message was decoded before the
    timer started), and an empty image topic is an error, not an empty map."""
    frames = list(tiny.frames(6, seed=3, h=48, w=64))
    store = bag_writer._store()
    times = [10.0 + i / 10 for i in range(6)]
    images = [(t, bag_writer.compressed_message(store, bag_writer._jpeg(f), t, "jpeg"))
              for f, t in zip(frames, times)]
    poses = [(t, bag_writer.odometry_message(store, t, x, 0.0))
             for t, x in ((10.0, 0.0), (10.5, 5.0), (11.0, 10.0))]
    bag = bag_writer.write_messages(tmp_path / "run.bag", images, poses,
                                    image_type="sensor_msgs/msg/CompressedImage")
    source = ["--bag", str(bag), "--topic", bag_writer.IMAGE_TOPIC, "--pose-topic",
              bag_writer.ODOM_TOPIC, "--pose-max-gap", "0.5"]
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), *source, "--no-progress"]) == 0
    out = tmp_path / "loc.json"
    assert main(["localize", str(tiny_onnx), str(map_dir), *source, "--gt", "positions",
                 "--gt-radius", "0.5", "--no-progress", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["frames"] == 6 and summary["recall@1"] == 1.0
    assert summary["decode_ms_p50"] > 0
    empty = bag_writer.write_messages(tmp_path / "empty.bag", [], poses)
    capsys.readouterr()
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "none"), "--bag", str(empty),
                 "--topic", bag_writer.IMAGE_TOPIC, "--no-progress"]) == 2
    assert "has no messages" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_loops_over_a_bag_with_every_and_positions(tiny_onnx: Path, tiny, tmp_path: Path,
                                                   cpu_only: None, bag_writer) -> None:
    """Ground truth, results and the CSV all count frames by position in the sequence
    (with --every 2 a bag's frame numbers used to index the truth: an IndexError)."""
    import csv

    frames = list(tiny.frames(6, seed=3, h=24, w=32))
    bag = bag_writer.write_bag(tmp_path / "run.bag", frames + frames, odometry=True)
    out = tmp_path / "loops.csv"
    assert main(["loops", str(tiny_onnx), "--bag", str(bag), "--topic",
                 bag_writer.IMAGE_TOPIC, "--pose-topic", bag_writer.ODOM_TOPIC, "--every",
                 "2", "--gt", "positions", "--gt-radius", "0.5", "--exclusion-frames", "1",
                 "--consistency", "1", "--min-score", "-1", "--no-progress",
                 "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(range(6))
    assert [r["source"].rsplit(":", 1)[1] for r in rows] == ["0", "2", "4", "6", "8", "10"]
    assert all(r["correct"] in ("", "True", "False") for r in rows)


def test_info_checks_the_whole_engine_file(tiny, tmp_path: Path, capsys) -> None:
    """`info` read only the header, so a truncated engine passed as fine."""
    from vpr_edge.engine_file import engine_header_for, write_engine_file

    blob = bytes(range(256)) * 40
    header = engine_header_for(tiny.metadata(), blob, tensorrt_module="tensorrt_rtx",
                               tensorrt_version="1.7", compute_capability=None,
                               builder={"compute_capabilities": ["8.0", "8.6"]})
    engine = write_engine_file(tmp_path / "m.engine", header, blob)
    out = tmp_path / "info.json"
    assert main(["info", str(engine), "--json", str(out)]) == 0
    facts = json.loads(out.read_text())
    assert facts["checksum"] == "ok" and facts["compute_capability"] == "8.0, 8.6"
    engine.write_bytes(engine.read_bytes()[:-100])
    capsys.readouterr()
    assert main(["info", str(engine)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_a_json_or_csv_path_that_cannot_be_written_is_refused_first(tiny_onnx: Path, routes,
                                                                    tmp_path: Path,
                                                                    cpu_only: None,
                                                                    capsys) -> None:
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(routes[0]),
                 "--no-progress", "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err and not map_dir.exists()
    (tmp_path / "a-file").write_text("x")
    assert main(["loops", str(tiny_onnx), "--images", str(routes[0]), "--no-progress",
                 "--csv", str(tmp_path / "a-file" / "loops.csv")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_loops_scores_the_time_window_as_the_detector_applies_it() -> None:
    """After time jumps back (a looped bag) the detector's time window covers only the
    frames since the jump; the scoring counted every earlier frame as excluded."""
    from vpr_edge.cli.loops import _eligible
    from vpr_edge.loop_closure import LoopClosureConfig

    eligible = _eligible(LoopClosureConfig(exclusion_frames=0, exclusion_seconds=10.0),
                         [0.0, 1.0, 2.0, 30.0, 0.5, 1.5, 31.0])
    assert eligible(4, 1) and eligible(4, 3)  # before the jump: candidates
    assert not eligible(5, 4)  # 1 s earlier, after the jump: in the window
    assert eligible(6, 4) and eligible(3, 0) and not eligible(2, 1)
    # a frame exactly the window's length older is a candidate, float rounding or not
    tenth = _eligible(LoopClosureConfig(exclusion_frames=0, exclusion_seconds=0.3),
                      [i * 0.1 for i in range(12)])
    assert all(tenth(q, q - 3) and not tenth(q, q - 2) for q in range(3, 12))


def test_loops_scoring_keeps_the_time_window_over_a_frame_slightly_out_of_order() -> None:
    """The detector keeps its window over a stamp less than JUMP_BACK_SECONDS (1 s) out of
    order; the scoring started a new one at any step back, so frames the detector had
    excluded counted as findable loops (recall 0.405 for 0.740 with one frame 0.85 s early
    on Gardens Point)."""
    from vpr_edge.cli.loops import _eligible
    from vpr_edge.loop_closure import LoopClosureConfig

    eligible = _eligible(LoopClosureConfig(exclusion_frames=0, exclusion_seconds=2.5),
                         [0.0, 1.0, 2.0, 3.0, 2.2, 4.0, 5.0])
    assert not any(eligible(4, j) for j in range(4))  # 2.2 s: every place is in the window
    assert [j for j in range(5) if eligible(5, j)] == [0, 1]  # at 4.0 s: stamps <= 1.5 s
    assert [j for j in range(6) if eligible(6, j)] == [0, 1, 2, 4]  # at 5.0 s: <= 2.5 s


def test_loops_scoring_moves_a_held_stamp_only_from_the_frame_after_the_corrupt_one() -> None:
    """A frame that comes back from a corrupt stamp far ahead holds the window's later-stamped
    places at its own stamp, from then on; the scoring held them so at every frame, before it
    too, so places the detector had excluded (at 10.6 s, the place stamped 10.8 s) counted
    as findable loops."""
    from vpr_edge.cli.loops import _eligible
    from vpr_edge.index import PlaceIndex
    from vpr_edge.loop_closure import LoopClosureConfig, LoopClosureDetector

    config = LoopClosureConfig(exclusion_frames=0, exclusion_seconds=0.2)
    stamps = [10.0, 10.8, 10.6, 60.0, 10.1, 10.3]  # 60 s: corrupt; 10.1 s goes on from 10.6
    eligible = _eligible(config, stamps)
    assert [j for j in range(2) if eligible(2, j)] == [0]  # 10.8 s is after 10.6 s
    assert [j for j in range(4) if eligible(4, j)] == []  # 60 s is held at 10.1 s from frame 5
    assert [j for j in range(5) if eligible(5, j)] == [0, 1, 2, 3, 4]  # 10.8, 10.6, 60: 10.1
    # with a window of 0 s, the frame that comes back (10.2 s) does not yet hold the places
    # stamped after it (10.5 s, the corrupt 60 s) when it is queried: they are ahead of it
    at_once = LoopClosureConfig(exclusion_frames=0, exclusion_seconds=0.0)
    assert [j for j in range(3) if _eligible(at_once, [10.0, 10.5, 60.0, 10.2])(3, j)] == [0]
    for config, stamps in ((config, stamps), (at_once, [10.0, 10.5, 60.0, 10.2, 10.6])):
        eligible = _eligible(config, stamps)
        detector = LoopClosureDetector(PlaceIndex(2), config)
        for q, stamp in enumerate(stamps):
            searched = detector._exclusion_filter(stamp)
            assert [searched is None or searched(j) for j in range(q)] == \
                eligible(q, np.arange(q)).tolist(), (q, stamps)
            detector.process_descriptor(np.array([1.0, 0.0], np.float32), stamp=stamp)


@pytest.mark.parametrize("seed", range(12))
def test_loops_scoring_holds_the_windows_the_detector_holds(seed: int) -> None:
    """Stamps as robots make them (out of order, paused, restarted, one corrupt stamp far
    ahead now and then): the places the scoring counts as findable are exactly those the
    detector's windows let it search, at every frame."""
    from vpr_edge.cli.loops import _eligible
    from vpr_edge.index import PlaceIndex
    from vpr_edge.loop_closure import LoopClosureConfig, LoopClosureDetector

    rng = np.random.default_rng(seed)
    stamps, t = [], 0.0
    for _ in range(80):
        draw = rng.random()
        if draw < 0.06:  # a corrupt stamp ahead; the stream goes on from t
            stamps.append(t + float(rng.choice([5.0, 1000.0])))
            continue
        t = (rng.uniform(0.0, 3.0) if draw < 0.1  # a restart
             else t + rng.uniform(1.5, 20.0) if draw < 0.14  # a pause
             else t + rng.uniform(-0.5, 0.6))  # on, or a little out of order
        stamps.append(t)
    config = LoopClosureConfig(exclusion_frames=int(rng.integers(0, 4)),
                               exclusion_seconds=float(rng.choice([0.5, 3.0, 10.0])))
    eligible = _eligible(config, stamps)
    detector = LoopClosureDetector(PlaceIndex(8), config)
    places = rng.standard_normal((len(stamps), 8)).astype(np.float32)
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    for q, stamp in enumerate(stamps):
        searched = detector._exclusion_filter(stamp)
        held = [searched is None or searched(j) for j in range(q)]
        assert held == eligible(q, np.arange(q)).tolist(), (q, stamps[:q + 1])
        detector.process_descriptor(places[q], stamp=stamp)


def test_info_reads_a_map_an_interrupted_save_left(tiny_onnx: Path, routes, tmp_path: Path,
                                                   cpu_only: None, capsys) -> None:
    """Between a save's two renames the map is <map>.vpr-edge-old: Localizer, query and
    PlaceIndex.open read it, `vpr-edge info` said "no such file or directory"."""
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, routes[0])
    map_dir.rename(tmp_path / "map.vpr-edge-old")
    out = tmp_path / "info.json"
    assert main(["info", str(map_dir), "--json", str(out)]) == 0
    facts = json.loads(out.read_text())
    assert facts["kind"] == "map" and facts["places"] == 30 and facts["bytes_on_disk"] > 0


def test_localize_positions_with_poses_of_other_lengths(tiny_onnx: Path, routes,
                                                        tmp_path: Path, cpu_only: None) -> None:
    """A map of x, y poses against frames with x, y, z (or 7-value odometry) poses ended in
    a numpy broadcast traceback; positions compare over the coordinates both have."""
    run1, run2 = routes
    map_list, query_list = tmp_path / "map.csv", tmp_path / "queries.csv"
    map_list.write_text("image,x,y\n" + "".join(
        f"{p},{i},0\n" for i, p in enumerate(sorted(run1.iterdir()))))
    query_list.write_text("image,x,y,z\n" + "".join(
        f"{p},{i},0,5\n" for i, p in enumerate(sorted(run2.iterdir()))))
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--list", str(map_list),
                 "--no-progress"]) == 0
    out = tmp_path / "loc.json"
    assert main(["localize", str(tiny_onnx), str(map_dir), "--list", str(query_list), "--gt",
                 "positions", "--gt-radius", "0.5", "--no-progress", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["recall@1"] >= 0.9


def test_a_damaged_frame_keeps_the_places_before_it_and_can_be_skipped(
        tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None, capsys, monkeypatch,
        caplog) -> None:
    """A truncated image file among 30: the build stops there naming the file and the way
    past it, after saving the places before it (nothing was saved with the default
    --save-every 500); --skip-damaged then adds the rest and counts the one left out, and
    loops and localize skip it too."""
    run1, run2 = routes
    bad = run1 / "Image017.png"
    bad.write_bytes(bad.read_bytes()[:40])
    map_dir = tmp_path / "map"
    out = tmp_path / "build.json"
    args = ["map", "build", str(tiny_onnx), str(map_dir), "--images", str(run1),
            "--no-progress", "--batch", "4", "--json", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Image017.png" in err and "--skip-damaged" in err
    assert "saved the 17 places this run added before the error" in caplog.text
    from vpr_edge.index import PlaceIndex

    assert len(PlaceIndex.open(map_dir)) == 17  # every frame before it, its batch's too
    assert main([*args, "--skip-damaged"]) == 0
    summary = json.loads(out.read_text())
    assert summary["added"] == 12 and summary["places"] == 29
    assert summary["damaged_frames_skipped"] == 1
    from vpr_edge import sources

    decoded: list[str] = []
    real_load = sources.load_image
    monkeypatch.setattr(sources, "load_image",
                        lambda path: decoded.append(Path(path).name) or real_load(path))
    assert main([*args, "--skip-damaged"]) == 0  # all but the damaged one in the map already
    assert decoded == ["Image017.png"]  # the frames the map holds are not decoded again
    loops = tmp_path / "loops.json"
    assert main(["loops", str(tiny_onnx), "--images", str(run1), "--no-progress",
                 "--skip-damaged", "--json", str(loops)]) == 0
    assert json.loads(loops.read_text())["frames"] == 29
    assert json.loads(loops.read_text())["damaged_frames_skipped"] == 1
    assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run1),
                 "--no-progress"]) == 2
    assert "--skip-damaged" in capsys.readouterr().err


def test_bag_topics_without_a_bag_are_refused(tiny_onnx: Path, routes, tmp_path: Path,
                                              capsys) -> None:
    run1, _ = routes
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "m"), "--images", str(run1),
                 "--pose-topic", "/odom", "--no-progress"]) == 2
    assert "--pose-topic read a ROS bag" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_localize_recall_counts_only_frames_with_a_true_place(tiny_onnx: Path, routes,
                                                              tmp_path: Path, cpu_only: None,
                                                              capsys) -> None:
    """A map of the first 12 frames and all 30 queries: the 16 frames with no place within
    2 frames in the map were misses (recall@1 at most 14/30); they are now counted apart,
    as vpr-eval does."""
    run1, run2 = routes
    part = tmp_path / "part"
    part.mkdir()
    for i in range(12):
        (part / f"Image{i:03d}.png").write_bytes((run1 / f"Image{i:03d}.png").read_bytes())
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, part)
    out = tmp_path / "loc.json"
    assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt",
                 "names", "--no-progress", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["frames"] == 30 and summary["frames_without_true_place"] == 16
    # of the 14 frames the map covers (over all 30 it could not pass 14 / 30)
    assert summary["recall@1"] > 0.5 and round(summary["recall@1"] * 14, 2).is_integer()


def test_localize_names_on_a_map_without_source_files_is_refused(
        tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None, capsys) -> None:
    """A map a robot built with Localizer.add: the error was ": no frame number in the file
    name", after the first query."""
    from vpr_edge import Localizer

    run1, run2 = routes
    map_dir = tmp_path / "robot_map"
    with Localizer(tiny_onnx, map_dir, backend="cpu") as loc:
        for path in sorted(run1.iterdir())[:5]:
            loc.add(str(path))
        loc.save()
    assert main(["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt",
                 "names", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "record no source file" in err and "--gt positions" in err


def test_info_calls_a_map_without_its_manifest_damaged(tiny_onnx: Path, routes, tmp_path: Path,
                                                       cpu_only: None, capsys) -> None:
    """It said "a directory, but not a map", where opening the map says it is damaged."""
    run1, _ = routes
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, run1)
    (map_dir / "manifest.json").unlink()
    assert main(["info", str(map_dir)]) == 2
    assert "holds a map index but no manifest" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 2  # a folder with no map in it at all
    assert "not a map" in capsys.readouterr().err


def test_a_map_that_cannot_be_saved_is_refused_before_any_frame(tiny_onnx: Path, routes,
                                                                tmp_path: Path, cpu_only: None,
                                                                monkeypatch, capsys) -> None:
    """It failed with a raw OSError at the first save, after every frame was described."""
    from vpr_edge import localizer

    run1, _ = routes
    (tmp_path / "file").write_text("x")
    described = []
    monkeypatch.setattr(localizer.Localizer, "describe",
                        lambda self, *a, **k: described.append(1))
    assert main(["map", "build", str(tiny_onnx), str(tmp_path / "file" / "map"), "--images",
                 str(run1), "--no-progress"]) == 2
    assert "the map cannot be saved there" in capsys.readouterr().err
    assert described == []


def test_map_build_resumes_a_map_that_stored_resolved_paths(
        tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps built before keys kept symlinks stored each frame's resolved path: a rerun
    through a symlinked folder must not add those frames again."""
    from vpr_edge import sources
    from vpr_edge.cli.map_build import build_map
    from vpr_edge.index import PlaceIndex

    run1, _ = routes
    linked = tmp_path / "linked"
    linked.symlink_to(run1)
    map_dir = tmp_path / "map"
    with monkeypatch.context() as older:  # keys as an older vpr-edge made them
        older.setattr(sources, "_keys", lambda path: (str(path.resolve()), None))
        first = build_map(tiny_onnx, map_dir, sources.folder_source(linked), progress=False)
    assert first["added"] == 30
    assert PlaceIndex.open(map_dir).get(0).meta["source"] == str(run1 / "Image000.png")
    again = build_map(tiny_onnx, map_dir, sources.folder_source(linked), progress=False)
    assert again["added"] == 0 and again["already_in_map"] == 30 and again["places"] == 30
    fresh = tmp_path / "fresh"
    build_map(tiny_onnx, fresh, sources.folder_source(linked), progress=False)
    assert PlaceIndex.open(fresh).get(0).meta["source"] == str(linked / "Image000.png")


@pytest.mark.parametrize("how, status", [("ctrl-c", 130), ("sigterm", 143)])
def test_map_build_saves_what_it_added_when_interrupted(tiny_onnx: Path, routes,
                                                        tmp_path: Path, cpu_only: None,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        how: str, status: int,
                                                        capsys) -> None:
    """Ctrl-C (or SIGTERM: docker stop, systemd) threw away every frame described since the
    last --save-every save, 500 by default, and SIGTERM said nothing at all."""
    import os
    import signal

    from vpr_edge import Localizer
    from vpr_edge.index import PlaceIndex

    run1, _ = routes
    map_dir = tmp_path / "map"
    real_describe = Localizer.describe
    calls = []

    def stopped_on_the_third_batch(self, frames, **kwargs):
        calls.append(len(frames))
        if len(calls) == 3:
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return real_describe(self, frames, **kwargs)

    monkeypatch.setattr(Localizer, "describe", stopped_on_the_third_batch)
    args = ["map", "build", str(tiny_onnx), str(map_dir), "--images", str(run1),
            "--no-progress", "--batch", "4"]
    assert main(args) == status
    assert len(PlaceIndex.open(map_dir)) == 8  # the two batches before the interruption
    err = capsys.readouterr().err
    assert ("interrupted" if how == "ctrl-c" else "terminated") in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler put back
    monkeypatch.setattr(Localizer, "describe", real_describe)
    assert main(args) == 0
    assert len(PlaceIndex.open(map_dir)) == 30


def test_map_build_holds_signals_back_while_it_adds_a_batch(tiny_onnx: Path, routes,
                                                            tmp_path: Path, cpu_only: None,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A Ctrl-C landing between hnswlib's insert and the records' append left the index
    inconsistent, and the save on the way out wrote a map that did not open."""
    import os
    import signal

    from vpr_edge.index import PlaceIndex, place_index

    run1, _ = routes
    real_insert = place_index.PlaceIndex._insert
    inserts = []

    def ctrl_c_inside_the_third(self, *args):
        real_insert(self, *args)
        inserts.append(1)
        if len(inserts) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # raised here, without the hold

    monkeypatch.setattr(place_index.PlaceIndex, "_insert", ctrl_c_inside_the_third)
    args = ["map", "build", str(tiny_onnx), str(tmp_path / "map"), "--images", str(run1),
            "--no-progress", "--batch", "4"]
    assert main(args) == 130
    assert len(PlaceIndex.open(tmp_path / "map")) == 12  # three whole batches
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_map_build_saves_when_interrupted_in_its_final_rebuild(tiny_onnx: Path, routes,
                                                               tmp_path: Path, cpu_only: None,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """The rebuild at the end (71 s at 100k places) was outside the saving path: Ctrl-C
    there lost every place since the last save."""
    from vpr_edge.cli.map_build import build_map
    from vpr_edge.index import IndexSettings, PlaceIndex
    from vpr_edge.sources import folder_source

    run1, _ = routes

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PlaceIndex, "rebuild", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_map(tiny_onnx, tmp_path / "map", folder_source(run1), progress=False,
                  index_settings=IndexSettings(mode="hnsw"))
    assert len(PlaceIndex.open(tmp_path / "map")) == 30


def test_map_build_resumes_through_another_spelling_of_its_folder(
        tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Built through a link, resumed from inside it with ``--images .`` (the working
    directory is the folder the link names): every frame was added again."""
    run1, _ = routes
    (tmp_path / "linked").symlink_to(run1)
    map_dir, out = tmp_path / "map", tmp_path / "build.json"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images",
                 str(tmp_path / "linked"), "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "linked")
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", ".",
                 "--no-progress", "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["added"] == 0 and again["already_in_map"] == 30


def _linked_source(kind: str, tmp_path: Path, frames: np.ndarray, request
                   ) -> tuple[list[str], list[str]]:
    """A source of ``kind`` twice, as map build's arguments: through a symbolic link to each
    image file (a frame list) or to the bag (a ROS 1 file, a ROS 2 folder), and through the
    files the links name."""
    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    if kind == "list":
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(real / f"f{i}.png")
            (links / f"f{i}.png").symlink_to(real / f"f{i}.png")
        for folder in (real, links):
            lines = ["image"] + [str(folder / f"f{i}.png") for i in range(len(frames))]
            (folder / "frames.csv").write_text("\n".join(lines) + "\n")
        return (["--list", str(links / "frames.csv")], ["--list", str(real / "frames.csv")])
    bag_writer = request.getfixturevalue("bag_writer")
    name = "run.bag" if kind == "ros1 bag" else "run"  # a ROS 2 bag is a folder
    bag = bag_writer.write_bag(real / name, list(frames),
                               ros2_storage=None if kind == "ros1 bag" else "mcap")
    (links / name).symlink_to(bag)
    topic = ["--topic", bag_writer.IMAGE_TOPIC]
    return ["--bag", str(links / name), *topic], ["--bag", str(bag), *topic]


@pytest.mark.parametrize("kind", ["list", "ros1 bag", "ros2 bag"])
def test_map_build_resumes_through_the_files_its_links_name(
        tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None, request, kind: str) -> None:
    """A map built through a link to each listed file or to the bag, resumed through what
    the links name: every frame was added again (a map twice over, which matches itself)."""
    through_links, direct = _linked_source(kind, tmp_path, tiny.frames(3, seed=5, h=24, w=32),
                                           request)
    map_dir, out = tmp_path / "map", tmp_path / "build.json"
    for source in (through_links, direct):
        assert main(["map", "build", str(tiny_onnx), str(map_dir), *source, "--no-progress",
                     "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    assert (again["added"], again["already_in_map"], again["places"]) == (0, 3, 3)


def test_paths_given_with_a_tilde_mean_the_home_folder(tiny_onnx: Path, routes,
                                                       tmp_path: Path, cpu_only: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A quoted '~/maps/lab' (a systemd unit, a Docker CMD: no shell) was a folder named
    '~' in the working directory, and the up-front check looked at the wrong folder."""
    from vpr_edge.index import PlaceIndex

    run1, _ = routes
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "frames").symlink_to(run1)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert main(["map", "build", str(tiny_onnx), "~/maps/lab", "--images", "~/frames",
                 "--no-progress", "--json", "~/build.json"]) == 0
    assert len(PlaceIndex.open(home / "maps" / "lab")) == 30
    assert (home / "build.json").is_file() and not (work / "~").exists()


def test_map_build_refuses_a_mount_point_before_describing(tiny_onnx: Path, routes,
                                                           tmp_path: Path, cpu_only: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys) -> None:
    """It described every frame, then failed at the first save."""
    import os

    from vpr_edge import Localizer

    run1, _ = routes
    target = tmp_path / "map"
    target.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target or real_ismount(p))
    monkeypatch.setattr(Localizer, "describe", lambda *a, **k: pytest.fail("described"))
    assert main(["map", "build", str(tiny_onnx), str(target), "--images", str(run1),
                 "--no-progress"]) == 2
    assert "mount point" in capsys.readouterr().err


def test_loops_names_a_bad_option_as_typed(tiny_onnx: Path, routes, cpu_only: None,
                                           capsys) -> None:
    """It said "LoopClosureConfig: min_score must be ..." to someone who typed --min-score."""
    run1, _ = routes
    assert main(["loops", str(tiny_onnx), "--images", str(run1), "--min-score", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--min-score must be a number in [-1, 1]" in err and "LoopClosureConfig" not in err


@pytest.mark.parametrize("name", ["{:06d}_cam0.png", "cam0_{:06d}.png"])
def test_localize_gt_names_reads_the_number_that_differs_within_a_folder(
        tiny_onnx: Path, routes, tmp_path: Path, cpu_only: None, capsys, name: str) -> None:
    """Files 000000_cam0.png ... 000029_cam0.png all had frame number 0 (the last number in
    the name), so every place was a true one: recall 1.0 for frames named out of step with
    the map; frames of one folder with the same number are refused."""
    run1, run2 = routes
    for run, shift in ((run1, 0), (run2, 10)):  # run2's names: 10 frames out of step
        for i in range(30):
            (run / f"Image{i:03d}.png").rename(run / name.format((i + shift) % 30))
    map_dir = tmp_path / "map"
    build_map_of(tiny_onnx, map_dir, run1)
    out = tmp_path / "loc.json"
    args = ["localize", str(tiny_onnx), str(map_dir), "--images", str(run2), "--gt", "names",
            "--no-progress"]
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["recall@1"] <= 0.1
    (run2 / name.format(3)).rename(run2 / name.format(3).replace("cam0", "cam1"))
    (run2 / name.format(4)).rename(run2 / name.format(3))  # now cam0 and cam1 of frame 3
    assert main(args) == 2
    assert "both have frame number" in capsys.readouterr().err


def _under_file_permissions() -> list[str]:
    """A command prefix that runs a child bound by file permissions: none for an ordinary
    user; for root, setpriv dropping the capabilities that override them (root owns the
    test's files, so their owner bits decide). Skips where root has no setpriv."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("running as root, without setpriv to drop the right to read anything")
    return prefix


LOOPS = ["loops", "{model}", "--no-progress"]
PERMISSION_CASES = {  # the command, and what its error says
    "a folder in a closed one": ([*LOOPS, "--images", "{tmp}/closed/frames"],
                                 "cannot look into {tmp}/closed (owned by uid"),
    "map build from it": (["map", "build", "{model}", "{tmp}/new", "--images",
                           "{tmp}/closed/frames"], "cannot look into {tmp}/closed (owned by"),
    "a folder that cannot be listed": ([*LOOPS, "--images", "{tmp}/unlisted"],
                                       "{tmp}/unlisted: no permission to list the folder"),
    "a folder listed but not entered": ([*LOOPS, "--images", "{tmp}/listed"],
                                        "cannot look into {tmp}/listed (owned by uid"),
    "a bag in a closed folder": ([*LOOPS, "--bag", "{tmp}/closed/run.bag", "--topic", "/cam"],
                                 "cannot look into {tmp}/closed (owned by uid"),
    "a bag that cannot be read": ([*LOOPS, "--bag", "{tmp}/unreadable.bag", "--topic", "/cam"],
                                  "{tmp}/unreadable.bag: no permission to read this bag; "),
    "a query image in a closed folder": (["query", "{model}", "{tmp}/map", "{tmp}/closed/q.png"],
                                         "cannot look into {tmp}/closed (owned by uid"),
}


@pytest.mark.parametrize("case", list(PERMISSION_CASES))
def test_a_path_this_user_may_not_read_is_a_clear_error(tiny_onnx: Path, tiny, tmp_path: Path,
                                                        cpu_only: None, case: str) -> None:
    """Python 3.11's Path.is_dir() and exists() raise PermissionError where a folder above
    the path is closed, and a folder that cannot be listed raised it from iterdir(): each
    was a traceback (exit 1); a bag that could not be read was called damaged, with
    `rosbag reindex` as the fix."""
    import os
    import subprocess
    import sys

    import vpr_edge

    pytest.importorskip("rosbags")
    frames = tiny.frames(2, seed=8, h=24, w=32)
    for folder in ("closed/frames", "unlisted", "listed", "open"):
        write_route(tmp_path / folder, frames)
    (tmp_path / "unreadable.bag").write_bytes(b"#ROSBAG V2.0\n")
    build_map_of(tiny_onnx, tmp_path / "map", tmp_path / "open")
    command, expected = PERMISSION_CASES[case]
    names = {"model": str(tiny_onnx), "tmp": str(tmp_path)}
    env = {**os.environ, "PYTHONPATH": str(Path(vpr_edge.__file__).parents[1])}
    modes = {"closed": 0o600, "unlisted": 0o300, "listed": 0o644, "unreadable.bag": 0o000}
    try:
        for name, mode in modes.items():
            (tmp_path / name).chmod(mode)
        child = subprocess.run([*_under_file_permissions(), sys.executable, "-m", "vpr_edge.cli",
                                *(part.format(**names) for part in command)],
                               capture_output=True, text=True, env=env, timeout=120)
    finally:
        for name in modes:
            (tmp_path / name).chmod(0o755)
    assert child.returncode == 2, child.stderr
    assert expected.format(**names) in child.stderr and "Traceback" not in child.stderr
    assert "chmod" in child.stderr and "reindex" not in child.stderr


def test_running_out_of_memory_is_an_error_not_a_traceback(tiny_onnx: Path, capsys,
                                                           monkeypatch) -> None:
    """numpy's MemoryError (a query's scan, a map that does not fit) reached the user as a
    traceback, though errors are promised as one line with the fix."""
    from vpr_edge.cli import info

    def run(args):
        raise MemoryError("Unable to allocate 513. MiB for an array with shape (37500, 7168)")

    monkeypatch.setattr(info, "run", run)
    assert main(["info", str(tiny_onnx)]) == 2
    err = capsys.readouterr().err
    assert "vpr-edge info: error: not enough memory" in err and "ulimit -v" in err
    assert "Traceback" not in err


def test_info_says_what_a_map_graph_file_holds(tmp_path: Path) -> None:
    """A save keeps index.hnsw while few places came since it was written (IndexSettings
    .graph_resave); `vpr-edge info` says how many rows it lacks, which opening inserts."""
    from vpr_edge.index import PlaceIndex

    rng = np.random.default_rng(0)
    places = rng.standard_normal((40, 16)).astype(np.float32)
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    index = PlaceIndex(16)
    index.add(places[:30])
    target = index.save(tmp_path / "map")
    out = tmp_path / "info.json"
    assert main(["info", str(target), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["graph_file"] == "holds all 30 rows"
    index.add(places[30:])
    index.save()
    assert main(["info", str(target), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["graph_file"].startswith(
        "written for 30 of the 40 rows: opening the map inserts the places of the other 10")
