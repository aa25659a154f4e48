"""The shared --help formatter: which defaults it shows, and how."""

from __future__ import annotations

import argparse

from vpr_edge.cli.help_format import HelpFormatter


def _help(*arguments: tuple[tuple[str, ...], dict]) -> str:
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    for flags, kwargs in arguments:
        p.add_argument(*flags, **kwargs)
    return " ".join(p.format_help().split())


def test_several_values_show_as_they_are_typed() -> None:
    """A tuple or list default showed as Python's repr, "(480, 640)", which is not what the
    command line takes."""
    text = _help((("--frame-size",), {"nargs": 2, "type": int, "default": (480, 640),
                                      "help": "frame size"}),
                 (("--ns",), {"nargs": "+", "type": int, "default": [1, 5], "help": "N"}))
    assert "frame size (default: 480 640)" in text and "N (default: 1 5)" in text
    assert "(480, 640)" not in text and "[1, 5]" not in text


def test_defaults_shown_only_where_they_tell_something() -> None:
    text = _help((("--flag",), {"action": "store_true", "help": "on"}),
                 (("--none",), {"default": None, "help": "unset"}),
                 (("--said",), {"default": 3, "help": "three (default 3)"}),
                 (("--shown",), {"default": 0.5, "help": "half"}))
    assert "--flag on --none NONE unset --said SAID three (default 3) --shown" in text
    assert "SHOWN half (default: 0.5)" in text and text.count("default") == 2
