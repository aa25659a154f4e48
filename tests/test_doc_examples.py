"""The documentation's examples run as written: the runtime's Python blocks in README.md and
docs/*.md (against the tiny test model, placed where they name a model), the ``>>>``
examples in the runtime's docstrings, and the command lines of the docs (parsed by the
commands' own parsers). Docs that drift from the code fail here."""

from __future__ import annotations

import argparse
import contextlib
import doctest
import importlib
import io
import pkgutil
import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

import vpr_edge

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/index.md", "docs/backends.md")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODEL_PATHS = ("runs/demo/model.onnx", "model.onnx")
IMAGE_NAME = re.compile(r"""["']([\w./-]+\.(?:png|jpg))["']""")


def runtime_blocks(document: str) -> list[str]:
    """The document's Python blocks that run on a runtime install (no training or export),
    leaving out signature listings, which are not code."""
    blocks = []
    for code in BLOCK.findall((REPO_ROOT / document).read_text()):
        if re.search(r"vpr_edge\.(training|export)", code):
            continue
        try:
            compile(code, document, "exec")
        except SyntaxError:
            continue  # e.g. `PlaceIndex(dim: int, *, ...)`: an API listing
        blocks.append(code)
    return blocks


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_python_examples_run(document: str, tiny_onnx: Path, tiny, tmp_path: Path,
                                 cpu_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each document's blocks run in order in one namespace (later blocks use earlier
    names), in a folder holding the model and the image files they name."""
    blocks = runtime_blocks(document)
    assert blocks, f"{document}: no runnable Python example found"
    for relative in MODEL_PATHS:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_onnx, tmp_path / relative)
    frames = tiny.frames(6, seed=3)
    for i, name in enumerate(sorted({n for code in blocks for n in IMAGE_NAME.findall(code)})):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[i % len(frames)]).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace = {"camera_frames": list(frames)}  # README: "your keyframes"
    for code in blocks:
        exec(compile(code, document, "exec"), namespace)


def runtime_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(vpr_edge.__path__, "vpr_edge.")
                  if m.name.split(".")[1] not in ("training", "export"))


def test_the_docstring_examples_run() -> None:
    ran = failed = 0
    for name in runtime_modules():
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS,
                                 verbose=False, report=True)
        ran += result.attempted
        failed += result.failed
    assert failed == 0, "docstring examples failed (the report is above)"
    assert ran >= 10, f"only {ran} docstring examples ran"


def test_the_readme_examples_are_found() -> None:
    """A block pattern or image pattern that matched nothing would let the test above pass
    without running the README's examples."""
    blocks = runtime_blocks("README.md")
    assert any("LoopClosureDetector(loc" in code for code in blocks)
    assert any("Localizer(" in code and "loc.save()" in code for code in blocks)
    names = {n for code in blocks for n in IMAGE_NAME.findall(code)}
    assert {"frame_0001.png", "frame_0950.png", "a.png", "b.png"} <= names


COMMAND_DOCUMENTS = ("README.md", "docs/index.md", "docs/backends.md", "RELIABILITY.md",
                     "ros_examples/README.md", "benchmarks/README.md", "export/plugin/README.md")
#: each command and the module whose ``build_parser()`` makes its parser
COMMAND_PARSERS = {"vpr-train": "vpr_edge.training.cli_train",
                   "vpr-eval": "vpr_edge.training.cli_eval",
                   "vpr-export": "vpr_edge.export.cli", "vpr-edge": "vpr_edge.cli"}
SHELL_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def command_lines(document: str) -> list[str]:
    """The ``vpr-*`` command lines of the document's shell blocks, continuation lines joined,
    comments and shell variables' assignments left out."""
    lines = []
    for language, code in SHELL_BLOCK.findall((REPO_ROOT / document).read_text()):
        if language not in ("bash", "sh", ""):
            continue
        for line in code.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                if part.split(" ", 1)[0] in COMMAND_PARSERS:
                    lines.append(part)
    return lines


def subcommand_parser(parser: argparse.ArgumentParser,
                      words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser ``words`` lead to, and the words after its name."""
    while True:
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not sub or not words or words[0] not in sub[0].choices:
            return parser, words
        parser, words = sub[0].choices[words[0]], words[1:]


def parsers_under(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers_under(sub)
    return found


def command_parser(command: str) -> argparse.ArgumentParser:
    """The command's parser; a skip where its extra is not installed (vpr-train's parser
    needs torch, and the runtime's tests run without it too)."""
    try:
        return importlib.import_module(COMMAND_PARSERS[command]).build_parser()
    except ImportError as exc:
        pytest.skip(f"{command}: {exc}")


@pytest.mark.parametrize("command", sorted(COMMAND_PARSERS))
def test_the_command_lines_parse(command: str) -> None:
    """Every ``vpr-*`` line in the docs' shell blocks is accepted by the command's parser, and
    every option named beside a command in running text (`vpr-export --fp16 --no-engine`) is
    one of its (sub)command's options: an option renamed or dropped fails here."""
    parser = command_parser(command)
    problems, checked = [], 0
    for document in COMMAND_DOCUMENTS:
        for line in command_lines(document):
            if line.split(" ", 1)[0] != command:
                continue
            checked += 1
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    parser.parse_args(shlex.split(line)[1:])
                except SystemExit:
                    problems.append(f"{document}: {line}\n    {err.getvalue().strip()}")
        text = (REPO_ROOT / document).read_text()
        for snippet in re.findall(r"`(" + re.escape(command) + r" [^`\n]+)`", text):
            sub, words = subcommand_parser(parser, snippet.split()[1:])
            known = {o for each in parsers_under(sub) for action in each._actions
                     for o in action.option_strings}  # (`vpr-train -o`: its subcommands')
            for word in words:
                option = word.split("=", 1)[0]
                if re.match(r"--?[a-zA-Z]", option) and option not in known:
                    problems.append(f"{document}: `{snippet}`: {sub.prog} has no {option}")
    assert not problems, "\n".join(problems)
    assert checked or command == "vpr-eval", f"no {command} command line found in the docs"
