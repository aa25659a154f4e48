"""Option values refused while the command line is read (``vpr_edge/cli/arg_types.py``)."""

from __future__ import annotations

import argparse

import pytest

from vpr_edge.cli import arg_types


@pytest.mark.parametrize("kind, good, bad", [
    (arg_types.positive_int, {"1": 1, "64": 64}, ["0", "-3", "2.5", "x", ""]),
    (arg_types.non_negative_int, {"0": 0, "7": 7}, ["-1", "nan", "1e3"]),
    (arg_types.positive_float, {"1e-5": 1e-5, "25": 25.0}, ["0", "-0.1", "nan", "inf", "x"]),
    (arg_types.non_negative_float, {"0": 0.0, "1e-4": 1e-4}, ["-1", "nan", "-inf"]),
    (arg_types.finite_float, {"-1": -1.0, "0.3": 0.3}, ["nan", "inf", "-inf", "abc"]),
    (arg_types.fraction_up_to_one, {"0.5": 0.5, "1": 1.0}, ["0", "1.5", "nan", "-0.5"]),
    (arg_types.inlier_count, {"8": 8, "15": 15}, ["7", "0", "8.5"]),
])
def test_values_in_and_out_of_range(kind, good: dict, bad: list) -> None:
    for text, value in good.items():
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            kind(text)


@pytest.mark.parametrize("argv, option", [
    (["bench", "model.onnx", "--frame-size", "-1", "640"], "--frame-size"),  # a traceback
    (["query", "model.onnx", "map", "x.png", "-k", "0"], "-k"),
    (["query", "model.onnx", "map", "x.png", "--min-score", "nan"], "--min-score"),
    (["map", "build", "model.onnx", "map", "--images", "d", "--batch", "0"], "--batch"),
    (["localize", "model.onnx", "map", "--images", "d", "--threads", "0"], "--threads"),
    (["loops", "model.onnx", "--images", "d", "--consistency", "0"], "--consistency"),
    # were refused by the detector with its own words: "... so fewer would --verify anything"
    (["loops", "model.onnx", "--images", "d", "--min-inliers", "3"], "--min-inliers"),
    # "... finite seconds >= 0 or None" (the command line has no None)
    (["loops", "model.onnx", "--images", "d", "--exclusion-seconds", "nan"],
     "--exclusion-seconds"),
    (["loops", "model.onnx", "--images", "d", "--exclusion-seconds", "-1"],
     "--exclusion-seconds"),
])
def test_vpr_edge_refuses_them_before_any_work(argv: list[str], option: str, capsys) -> None:
    from vpr_edge.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
