"""Output files of the commands (--json, --csv): refused before the work when writing them
would destroy something, and a failed write named, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vpr_edge.cli import main


@pytest.fixture
def built(tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None) -> tuple[Path, Path]:
    """A folder of frames and a map built from it."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(tiny.frames(4, seed=5, h=24, w=32)):
        Image.fromarray(frame).save(frames / f"Image{i:03d}.png")
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(frames),
                 "--no-progress"]) == 0
    return frames, map_dir


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def test_json_inside_a_map_folder_is_refused(tiny_onnx: Path, built, tmp_path: Path,
                                             capsys) -> None:
    """`info MAP --json MAP/manifest.json` overwrote the map's manifest: the map was lost."""
    frames, map_dir = built
    before = files_of(map_dir)
    assert main(["info", str(map_dir), "--json", str(map_dir / "manifest.json")]) == 2
    assert "inside the map folder" in capsys.readouterr().err
    assert files_of(map_dir) == before
    new_map = tmp_path / "new"  # not made yet: the summary would land in it
    assert main(["map", "build", str(tiny_onnx), str(new_map), "--images", str(frames),
                 "--no-progress", "--json", str(new_map / "summary.json")]) == 2
    assert "inside the map folder" in capsys.readouterr().err and not new_map.exists()


def test_an_output_that_is_an_input_or_named_like_a_model_is_refused(tiny_onnx: Path, built,
                                                                      tmp_path: Path,
                                                                      capsys) -> None:
    frames, _ = built
    model = tiny_onnx.read_bytes()
    assert main(["info", str(frames / "Image000.png"), "--json", str(tmp_path / "x.onnx")]) == 2
    assert "a .onnx name is a model's" in capsys.readouterr().err
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress", "--csv",
                 str(frames / "Image001.png")]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert main(["info", str(tiny_onnx), "--json", str(tiny_onnx)]) == 2
    assert tiny_onnx.read_bytes() == model
    summary = ["loops", str(tiny_onnx), "--images", str(frames), "--no-progress", "--json",
               str(frames / "loops.json")]  # not an image: a rerun may replace it
    assert main(summary) == 0 and main(summary) == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_failed_write_is_named(tiny_onnx: Path, built, capsys) -> None:
    """A full disk gave a raw OSError traceback after the work."""
    frames, map_dir = built
    assert main(["info", str(map_dir), "--json", "/dev/full"]) == 2
    assert "--json /dev/full: cannot write it (No space left on device)" in \
        capsys.readouterr().err
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress",
                 "--csv", "/dev/full"]) == 2
    assert "--csv /dev/full: cannot write it" in capsys.readouterr().err


def test_json_to_a_special_file_and_to_a_file(tiny_onnx: Path, built, tmp_path: Path,
                                              capfd) -> None:
    """A pipe or /dev/stdout is written directly (it cannot be replaced by a rename), a file
    whole (written beside it, then renamed)."""
    _, map_dir = built
    assert main(["info", str(map_dir), "--json", "/dev/stdout"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["places"] == 4  # stdout holds the JSON alone; the table is on stderr
    assert "places" in err and "map:" in err
    target = tmp_path / "out" / "info.json"
    assert main(["info", str(map_dir), "--json", str(target)]) == 0
    assert json.loads(target.read_text())["places"] == 4
    assert [p.name for p in target.parent.iterdir()] == ["info.json"]


@pytest.mark.parametrize("json_to", [[], ["--json", "/dev/stdout"]])
def test_a_reader_that_leaves_the_pipe_is_no_error(tiny_onnx: Path, json_to: list[str]
                                                   ) -> None:
    """`vpr-edge info model | head -1` printed a BrokenPipeError traceback; with `--json
    /dev/stdout`, the JSON's failed write is no "cannot write it" error either."""
    child = subprocess.Popen([sys.executable, "-m", "vpr_edge.cli", "info", str(tiny_onnx),
                              *json_to], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader leaves before the first line (`| head -0`)
    assert child.wait(timeout=60) == 141
    err = child.stderr.read()
    assert b"Traceback" not in err and b"error" not in err


def test_json_outputs_are_strict_json(tmp_path: Path) -> None:
    """json.dumps writes NaN and Infinity, which jq and other strict parsers refuse; an
    unknown number is null (numpy floats too)."""
    import numpy as np

    from vpr_edge.cli.output import write_json

    def refuse(name: str):
        raise ValueError(name)

    target = tmp_path / "out.json"
    write_json(target, {"stamp": float("nan"), "pose": (1.0, float("inf")),
                        "score": np.float32(0.5), "gone": np.float32("nan"), "n": 3})
    assert json.loads(target.read_text(), parse_constant=refuse) == {
        "stamp": None, "pose": [1.0, None], "score": 0.5, "gone": None, "n": 3}


def cli(*args: str, stdout, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """``vpr-edge ARGS`` in a child process, its stdout as given (a file: the shell's ``>``
    or ``>>``; PIPE: ``|``) and buffered, as it is when not a terminal."""
    import vpr_edge

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(Path(vpr_edge.__file__).parents[1])  # (this checkout's package)
    return subprocess.run([sys.executable, "-m", "vpr_edge.cli", *args], stdout=stdout,
                          stderr=stderr, env=env, timeout=120, check=False)


@pytest.mark.parametrize("stdout_path", ["/dev/stdout", "-", "/proc/self/fd/1"])
def test_json_to_stdout_is_clean_and_truncates_nothing(tiny_onnx: Path, tmp_path: Path,
                                                       stdout_path: str) -> None:
    """`--json /dev/stdout` opened the shell's redirect target with O_TRUNC: `>> run.log`
    lost the log's lines, `> out.json` held the table written over the JSON, and `| jq` read
    the table first. The JSON now goes through stdout alone, the table to stderr."""
    log = tmp_path / "run.log"
    log.write_text("line1\nline2\n")
    with open(log, "a") as appended:  # >> run.log
        child = cli("info", str(tiny_onnx), "--json", stdout_path, stdout=appended)
    assert child.returncode == 0, child.stderr
    head, _, rest = log.read_text().partition("line2\n")
    assert head == "line1\n" and json.loads(rest)["model"] == "tiny-test"
    assert b"tiny-test" in child.stderr  # the table
    out = tmp_path / "out.json"
    with open(out, "w") as redirected:  # > out.json
        assert cli("info", str(tiny_onnx), "--json", stdout_path,
                   stdout=redirected).returncode == 0
    assert json.loads(out.read_text())["model"] == "tiny-test"
    piped = cli("info", str(tiny_onnx), "--json", stdout_path, stdout=subprocess.PIPE)
    assert piped.returncode == 0 and json.loads(piped.stdout)["model"] == "tiny-test"


def test_json_to_the_file_stdout_is_or_to_stderr(tiny_onnx: Path, tmp_path: Path) -> None:
    """`--json out.json > out.json` is stdout too: the JSON alone, the table on stderr.
    `--json /dev/stderr` truncated the file stderr was redirected to (`2>> err.log` lost its
    lines); it now follows what was printed there."""
    out = tmp_path / "out.json"
    with open(out, "w") as redirected:
        assert cli("info", str(tiny_onnx), "--json", str(out), stdout=redirected).returncode == 0
    assert json.loads(out.read_text())["model"] == "tiny-test"
    log = tmp_path / "err.log"
    log.write_text("earlier\n")
    with open(log, "a") as appended:  # 2>> err.log
        child = cli("info", str(tiny_onnx), "--json", "/dev/stderr", stdout=subprocess.PIPE,
                    stderr=appended)
    assert child.returncode == 0 and b"tiny-test" in child.stdout
    head, _, rest = log.read_text().partition("earlier\n")
    assert head == "" and json.loads(rest)["model"] == "tiny-test"


def test_csv_to_stdout_is_clean(tiny_onnx: Path, built, capfd) -> None:
    frames, _ = built
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress",
                 "--csv", "-"]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines()[0].startswith("index,source,stamp") and len(out.splitlines()) == 5
    assert "vpr-edge loops" in err


def test_csv_lines_end_in_a_newline_alone(tiny_onnx: Path, built, tmp_path: Path) -> None:
    """The CSV's lines ended in CR LF (the csv module's default): ``loops --csv - | awk -F,
    '$10 == "True"'`` or ``| cut -d, -f10`` saw the last column as ``True\\r``."""
    frames, _ = built
    out = tmp_path / "loops.csv"
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress",
                 "--exclusion-frames", "0", "--consistency", "1", "--min-score", "-1",
                 "--csv", str(out)]) == 0
    data = out.read_bytes()
    assert b"\r" not in data and data.endswith(b"\n") and data.count(b"\n") == 5
    assert data.split(b"\n")[2].split(b",")[5] == b"0"  # frame 1's loop: frame 0

def test_two_outputs_of_one_path_are_refused_before_the_work(tiny_onnx: Path, built,
                                                             tmp_path: Path, capfd) -> None:
    """`loops --csv same.out --json same.out` wrote the CSV, then the JSON over it (rc 0)."""
    frames, _ = built
    loops = ["loops", str(tiny_onnx), "--images", str(frames), "--no-progress"]
    same = tmp_path / "same.out"
    (tmp_path / "sub").mkdir()
    for csv_path, json_path in ((same, same), (same, tmp_path / "sub" / ".." / "same.out"),
                                ("-", "/dev/stdout")):
        assert main([*loops, "--csv", str(csv_path), "--json", str(json_path)]) == 2
        out, err = capfd.readouterr()
        assert "--json" in err and "--csv" in err and "give each its own path" in err
        assert out == "" and not same.exists()  # refused before the work
    os.symlink(same, tmp_path / "link.out")
    assert main([*loops, "--csv", str(same), "--json", str(tmp_path / "link.out")]) == 2
    assert "are the same path" in capfd.readouterr().err
    assert main([*loops, "--csv", os.devnull, "--json", os.devnull]) == 0  # (both discarded)
    new_map = tmp_path / "new"
    assert main(["map", "build", str(tiny_onnx), str(new_map), "--images", str(frames),
                 "--no-progress", "--json", str(new_map)]) == 2
    assert "map folder" in capfd.readouterr().err and not new_map.exists()
    engine = tmp_path / "model.trt-out"
    assert main(["engine", "build", str(tiny_onnx), "--output", str(engine), "--json",
                 str(engine)]) == 2
    assert "--output" in capfd.readouterr().err and not engine.exists()


def test_stamps_print_whole_and_scores_short(capsys) -> None:
    """Every float printed with 4 significant digits: epoch stamps all read 1.7e+09."""
    from vpr_edge.cli.output import print_facts, print_table

    print_table([{"stamp": 1_700_000_005.0, "score": 0.912345, "match_stamp": 1.5}])
    print_facts({"loop": {"query_stamp": 1_700_000_005.25, "score": 0.123456}})
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[1] == ["1700000005.000", "0.9123", "1.500"]
    assert lines[2:] == [["loop.query_stamp", "1700000005.250"], ["loop.score", "0.1235"]]
