"""vpr-train (init, fit, whiten) and vpr-eval on a tiny real set."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_edge.training import cli_eval, cli_train
from vpr_edge.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def small_folders(gardens_point_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gp")
    for side in ("day_left", "day_right"):
        (root / side).mkdir()
        for i in range(0, 40, 2):
            name = f"Image{i:03d}.jpg"
            shutil.copy(gardens_point_dir / side / name, root / side / name)
    return root / "day_left", root / "day_right"


def test_init_fit_whiten_eval(small_folders, tmp_path: Path, capsys) -> None:
    left, right = small_folders
    init = tmp_path / "init.pt"
    assert cli_train.main(["init", "--images", str(left), "--output", str(init),
                           "--clusters", "8", "--height", "64", "--width", "96",
                           "--json", str(tmp_path / "init.json")]) == 0
    report = json.loads((tmp_path / "init.json").read_text())
    assert report["images_used"] == 20 and report["dim"] == 8 * 112
    assert load_checkpoint(init).provenance["made_by"] == "vpr-train init"
    assert "local features" in capsys.readouterr().err  # its progress bar

    fitted = tmp_path / "fit.pt"
    assert cli_train.main(["fit", "--frame-aligned", str(left), str(right), "--span", "0", "0.7",
                           "--val-span", "0.7", "1.0", "--init", str(init), "--output",
                           str(fitted), "--epochs", "1", "--negatives", "3",
                           "--negative-pool", "10", "--no-progress", "--threads", "2",
                           "--json", str(tmp_path / "fit.json")]) == 0
    history = json.loads((tmp_path / "fit.json").read_text())["history"]
    assert history[0]["epoch"] == 1 and "R@1" in history[0]["recall"]
    # resuming with other trainable stages: the optimizer state cannot match (was a raw
    # ValueError from torch after the datasets were read)
    stages = load_checkpoint(fitted).config.backbone.trainable_stages
    assert cli_train.main(["fit", "--frame-aligned", str(left), str(right), "--span", "0", "0.7",
                           "--resume", str(fitted), "--trainable-stages", str(stages + 1),
                           "--negatives", "3", "--negative-pool", "10",
                           "--output", str(tmp_path / "more.pt"), "--epochs", "2",
                           "--no-progress"]) == 2
    assert f"--trainable-stages {stages}" in capsys.readouterr().err

    whitened = tmp_path / "white.pt"
    capsys.readouterr()
    assert cli_train.main(["whiten", str(fitted), "--images", str(left), "--dim", "8",
                           "--max-dim", "16", "--output", str(whitened), "--no-progress"]) == 0
    assert "whitening descriptors" not in capsys.readouterr().err  # --no-progress (new)
    ckpt = load_checkpoint(whitened)
    assert ckpt.config.whitening_dim == 8 and ckpt.config.whitening_max_dim == 16
    projected = tmp_path / "projected.pt"
    assert cli_train.main(["whiten", str(fitted), "--images", str(left), "--dim", "8",
                           "--projection-only", "--output", str(projected)]) == 0
    rows = load_checkpoint(projected).build().whitening.components.double()
    torch.testing.assert_close(rows @ rows.T, torch.eye(8, dtype=torch.float64), atol=1e-4,
                               rtol=0)  # unscaled principal directions: orthonormal rows
    assert load_checkpoint(projected).provenance["whitening"]["whitened"] is False

    result = tmp_path / "eval.json"
    assert cli_eval.main([str(whitened), "--frame-aligned", str(left), str(right),
                          "--no-progress", "--json", str(result), "--ns", "1", "5"]) == 0
    recalls = json.loads(result.read_text())
    assert recalls["queries"] == 20 and 0.0 <= recalls["recall@1"] <= recalls["recall@5"] <= 1
    assert "R@1" in capsys.readouterr().out


def noise_images(folder: Path, count: int) -> Path:
    """``count`` small random JPEGs in ``folder`` (Image000.jpg, ...)."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(len(folder.name))
    for i in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"Image{i:03d}.jpg")
    return folder


def tiny_init(images: Path, output: Path, json_to: str) -> list[str]:
    """`vpr-train init` arguments for a model made in seconds from a few small images."""
    return ["init", "--images", str(images), "--output", str(output), "--clusters", "4",
            "--height", "32", "--width", "48", "--descriptors-per-image", "20",
            "--no-progress", "--json", json_to]


def test_json_to_stdout_is_the_json_alone(tmp_path: Path, capfd) -> None:
    """`--json -` wrote the JSON to stdout after the table, so `| jq` could not read it: the
    table now goes to stderr, as vpr-edge's does."""
    left, right = noise_images(tmp_path / "left", 6), noise_images(tmp_path / "right", 6)
    init = tmp_path / "init.pt"
    assert cli_train.main(tiny_init(left, init, "-")) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["checkpoint"] == str(init) and "vpr-train init" in err
    assert cli_eval.main([str(init), "--frame-aligned", str(left), str(right), "--ns", "1",
                          "--no-progress", "--json", "-"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["queries"] == 6 and "R@1" in err


def test_clear_errors(tmp_path: Path, corridor_dir: Path, capsys) -> None:
    assert cli_train.main(["init", "--images", str(tmp_path / "none"), "--output",
                           str(tmp_path / "m.pt")]) == 2
    assert "none: no such folder" in capsys.readouterr().err  # (it said "not a directory")
    (tmp_path / "empty").mkdir()
    assert cli_train.main(["init", "--images", str(tmp_path / "empty"), "--output",
                           str(tmp_path / "m.pt")]) == 2
    assert "no images" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert cli_eval.main([str(tmp_path / "junk.pt"), "--corridor", str(tmp_path)]) == 2
    assert "expected ref" in capsys.readouterr().err
    assert cli_eval.main([str(tmp_path / "junk.pt"), "--corridor", str(corridor_dir)]) == 2
    assert "not a readable vpr-edge checkpoint" in capsys.readouterr().err
    assert cli_eval.main([str(tmp_path / "junk.pt")]) == 2
    assert "give exactly one" in capsys.readouterr().err
    # it was ignored for exported models (their descriptors came out full size)
    assert cli_eval.main([str(tmp_path / "m.onnx"), "--corridor", str(corridor_dir),
                          "--whitening-dim", "8"]) == 2
    assert "--whitening-dim applies to .pt checkpoints" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path: Path,
                                                                     capsys) -> None:
    """An output that is a directory, or a path through a file, ended each tool in a raw
    traceback after the work (for `fit`, after an epoch)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    folder = tmp_path / "nowhere-images"  # never read: the check comes first
    for output, json_path, words in ((tmp_path, None, "is a directory"),
                                     (a_file / "m.pt", None, "is a file, not a folder"),
                                     (tmp_path / "m.pt", tmp_path, "--json"),
                                     # the report was written over the checkpoint
                                     (tmp_path / "model", tmp_path / "model",
                                      "give each its own path")):
        args = ["init", "--images", str(folder), "--output", str(output)]
        if json_path is not None:
            args += ["--json", str(json_path)]
        assert cli_train.main(args) == 2
        assert words in capsys.readouterr().err
    assert cli_eval.main([str(tmp_path / "m.pt"), "--frame-aligned", str(folder), str(folder),
                          "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err


def test_without_torch_each_tool_names_its_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    """A robot's runtime install (`[cpu]`) has the console scripts too: without torch they
    said `ModuleNotFoundError` (even `vpr-train --help`); now they name the extra."""
    from PIL import Image

    from vpr_edge.export import cli as export_cli

    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for i in range(3):
            Image.new("RGB", (32, 24), (40 * i, 0, 0)).save(tmp_path / side / f"Image{i:03d}.jpg")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    assert cli_train.main(["--help"]) == 2
    assert "the vpr-edge[train] extra" in capsys.readouterr().err
    assert cli_eval.main([str(tmp_path / "m.pt"), "--frame-aligned", str(tmp_path / "left"),
                          str(tmp_path / "right")]) == 2
    err = capsys.readouterr().err
    assert "the vpr-edge[train] extra" in err and "needs no torch" in err
    assert export_cli.main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "out")]) == 2
    assert "the vpr-edge[export] extra" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool, argv, option", [
    # each was a traceback or a silent no-op after the work (or an epoch of it)
    ("eval", ["m.pt", "--corridor", "c", "--ns", "0"], "--ns"),
    ("eval", ["m.pt", "--corridor", "c", "--ns", "-1", "5"], "--ns"),
    ("eval", ["m.pt", "--corridor", "c", "--threads", "-1"], "--threads"),
    ("train", ["fit", "--frame-aligned", "a", "b", "-o", "f.pt", "--lr-step", "0"], "--lr-step"),
    ("train", ["fit", "--frame-aligned", "a", "b", "-o", "f.pt", "--weight-decay", "-1"],
     "--weight-decay"),
    ("train", ["fit", "--frame-aligned", "a", "b", "-o", "f.pt", "--margin", "nan"], "--margin"),
    ("train", ["fit", "--frame-aligned", "a", "b", "-o", "f.pt", "--lr-gamma", "nan"],
     "--lr-gamma"),
    ("train", ["fit", "--frame-aligned", "a", "b", "-o", "f.pt", "--train-size", "0", "0"],
     "--train-size"),
    ("train", ["init", "--images", "d", "-o", "i.pt", "--whitening-dim", "0"],
     "--whitening-dim"),
    ("train", ["init", "--images", "d", "-o", "i.pt", "--descriptors-per-image", "0"],
     "--descriptors-per-image"),
    ("train", ["whiten", "m.pt", "--images", "d", "--dim", "0", "-o", "w.pt"], "--dim"),
])
def test_impossible_values_are_refused_before_any_work(tool: str, argv: list[str],
                                                       option: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        (cli_eval if tool == "eval" else cli_train).main(argv)
    assert exited.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_train_config_refuses_values_torch_fails_on() -> None:
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.training.train import TrainConfig

    for bad in ({"lr_step_epochs": 0}, {"weight_decay": -1.0}, {"margin": float("nan")},
                {"lr_gamma": 1.5}, {"lr": float("inf")}, {"train_height": 0}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_an_interrupted_fit_says_how_to_resume(tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback and no word on the checkpoint."""
    from vpr_edge.training import train

    output = tmp_path / "fit.pt"
    args = ["fit", "--frame-aligned", str(tmp_path), str(tmp_path), "--output", str(output)]

    def interrupted(write: bool):
        def run(_args):
            if write:
                output.write_bytes(b"the checkpoint of epoch 1")
            raise KeyboardInterrupt
        return run

    monkeypatch.setattr(train, "run_fit", interrupted(write=False))
    assert cli_train.main(args) == 130
    assert "interrupted before the first epoch finished" in capsys.readouterr().err
    monkeypatch.setattr(train, "run_fit", interrupted(write=True))
    assert cli_train.main(args) == 130
    err = capsys.readouterr().err
    assert f"{output} holds the last finished epoch" in err and f"--resume {output}" in err
    # interrupted again, resumed, before an epoch finished: that checkpoint still holds one
    # (it said "before the first epoch finished; nothing was written")
    monkeypatch.setattr(train, "run_fit", interrupted(write=False))
    assert cli_train.main([*args, "--resume", str(output)]) == 130
    err = capsys.readouterr().err
    assert f"{output} still holds the last finished epoch" in err and "nothing" not in err


def test_an_interrupted_eval_ends_without_a_traceback(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_eval, "run", interrupted)
    assert cli_eval.main([str(tmp_path / "m.pt"), "--corridor", str(tmp_path)]) == 130
    assert "vpr-eval: interrupted" in capsys.readouterr().err


def test_eval_takes_vpr_edge_s_ground_truth_option_names() -> None:
    """vpr-edge says --gt-tolerance / --gt-radius for what vpr-eval called --tolerance /
    --eval-radius; both names work in vpr-eval."""
    args = cli_eval.build_parser().parse_args(["m.pt", "--gt-tolerance", "3",
                                               "--gt-radius", "12.5"])
    assert args.tolerance == 3 and args.eval_radius == 12.5
    args = cli_eval.build_parser().parse_args(["m.pt", "--tolerance", "1", "--eval-radius", "5"])
    assert args.tolerance == 1 and args.eval_radius == 5.0


@pytest.mark.parametrize("output, words", [
    ("-", "a model (checkpoint, engine) is a binary file, written whole, not to standard "
          "output"),
    ("/dev/stdout", "not to standard output"),
    ("pipe", "not a regular file"),  # (not /dev/null: a regression would replace it)
])
def test_a_checkpoint_is_never_written_to_stdout_or_a_device(output: str, words: str,
                                                             tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    """`-o -` trained and then wrote the checkpoint to a file named `-`; `-o /dev/stdout` or
    `-o /dev/null` (as root) replaced that device by the checkpoint (written to a temporary
    file and renamed over it). Each is refused before any work (the images are never read)."""
    monkeypatch.chdir(tmp_path)
    if output == "pipe":
        os.mkfifo(output)
    for command in (["init", "--images", "none"], ["whiten", "m.pt", "--images", "none",
                                                   "--dim", "8"],
                    ["fit", "--frame-aligned", "none", "none"]):
        assert cli_train.main([*command, "-o", output]) == 2
        err = capsys.readouterr().err
        assert f"-o/--output {output}: " in err and words in err, err
    assert [p.name for p in tmp_path.iterdir()] == (["pipe"] if output == "pipe" else [])
    assert output != "pipe" or (tmp_path / "pipe").is_fifo()


def test_an_output_that_is_an_input_is_refused_before_the_work(tmp_path: Path,
                                                              capsys) -> None:
    """vpr-edge refuses a --json that would overwrite one of its inputs (an image of a
    folder it reads); vpr-train and vpr-eval wrote the report over it after the work."""
    images = noise_images(tmp_path / "images", 2)
    image = images / "Image000.jpg"
    pixels = image.read_bytes()
    for main, argv in ((cli_train.main, ["whiten", str(tmp_path / "m.pt"), "--images",
                                         str(images), "--dim", "8", "-o",
                                         str(tmp_path / "w.pt")]),
                       (cli_eval.main, [str(tmp_path / "m.pt"), "--frame-aligned",
                                        str(images), str(images)])):
        assert main([*argv, "--json", str(image)]) == 2
        assert "is an input of this command" in capsys.readouterr().err
    assert image.read_bytes() == pixels


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_report_that_cannot_be_written_after_the_work_is_an_error_not_a_traceback(
        tmp_path: Path, capsys) -> None:
    """A full disk when the --json report was written, after the work: a raw traceback
    (the write ran outside the error handling); now one line, exit code 2, and the work's
    results kept (the checkpoint written, the table printed)."""
    left, right = noise_images(tmp_path / "left", 6), noise_images(tmp_path / "right", 6)
    init = tmp_path / "init.pt"
    assert cli_train.main(tiny_init(left, init, "/dev/full")) == 2
    out, err = capsys.readouterr()
    assert "vpr-train init: error: --json /dev/full: cannot write it (No space left" in err
    assert "Traceback" not in err and "vpr-train init" in out and init.is_file()
    assert cli_eval.main([str(init), "--frame-aligned", str(left), str(right), "--ns", "1",
                          "--no-progress", "--json", "/dev/full"]) == 2
    out, err = capsys.readouterr()
    assert "vpr-eval: error: --json /dev/full: cannot write it (No space left" in err
    assert "R@1" in out
