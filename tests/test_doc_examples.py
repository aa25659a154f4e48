"""The documentation's examples run as written: the runtime's Python blocks in README.md and
docs/*.md (against the tiny test model, placed where they name a model), and the ``>>>``
examples in the runtime's docstrings. Docs that drift from the code fail here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
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
