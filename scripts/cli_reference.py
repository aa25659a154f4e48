"""Write docs/cli.md: every command's ``--help``, made from the argparse parsers themselves.

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 if docs/cli.md differs from the code

``tests/test_cli_reference.py`` runs the check, so an option added, renamed or given a new
default without rewriting the reference fails the tests. The help is formatted at a fixed
width (:data:`WIDTH` columns), so the file does not depend on the terminal that made it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "cli.md"
WIDTH = 100
#: each command and the module whose ``build_parser()`` makes its parser
COMMANDS = {
    "vpr-train": "vpr_edge.training.cli_train",
    "vpr-eval": "vpr_edge.training.cli_eval",
    "vpr-export": "vpr_edge.export.cli",
    "vpr-edge": "vpr_edge.cli",
}
HEADER = """# Command-line reference

Every command's `--help`, as the code prints it (made by `scripts/cli_reference.py` with
Python {python}; `tests/test_cli_reference.py` fails when this file and the code disagree).
The README shows each command at work:
[Train](../README.md#train-vpr-train-and-vpr-eval), [Export](../README.md#export-vpr-export),
[the `vpr-edge` command](../README.md#the-vpr-edge-command).
"""


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and its subcommands' parsers, depth first, in the order they were added."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:  # aliases name the same parser
                    seen.add(id(sub))
                    yield from parsers(sub)


def anchor(prog: str) -> str:
    """GitHub's anchor for a ``## `prog` `` heading."""
    return prog.replace(" ", "-")


def reference() -> str:
    """The whole of docs/cli.md."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps at the terminal's width
    try:
        sections = [(p.prog, p.format_help().rstrip())
                    for module in COMMANDS.values()
                    for p in parsers(importlib.import_module(module).build_parser())]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    contents = "\n".join(f"- [`{prog}`](#{anchor(prog)})" for prog, _ in sections)
    body = "\n\n".join(f"## {prog}\n\n```text\n{text}\n```" for prog, text in sections)
    header = HEADER.format(python=python_version())
    return f"{header}\n{contents}\n\n{body}\n"


def python_version() -> str:
    """``3.11``: argparse's layout differs between Python versions (3.10 says "options:",
    3.13 lists ``-v, --verbose VALUE`` once)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="compare with the file instead of writing it; exit 1 if they differ")
    p.add_argument("--output", type=Path, default=OUTPUT, help="the reference file")
    args = p.parse_args(argv)
    text = reference()
    if not args.check:
        args.output.write_text(text)
        print(f"wrote {args.output}")
        return 0
    old = args.output.read_text() if args.output.exists() else ""
    if old == text:
        return 0
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                               str(args.output), "the code's --help"))
    print(f"\n{args.output} is out of date: run python scripts/cli_reference.py")
    return 1


if __name__ == "__main__":
    sys.exit(main())
