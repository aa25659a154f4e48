"""Packaging invariants: the runtime stays torch-free and every package ships in the wheel."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]

PACKAGE_ROOTS = {"vpr_edge": "vpr_edge", "vpr_edge.training": "training",
                 "vpr_edge.export": "export"}


def _pyproject() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_import_vpr_edge_does_not_import_torch() -> None:
    code = (
        "import sys, vpr_edge, vpr_edge.metadata, vpr_edge.images, vpr_edge.errors\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(vpr_edge.__path__, 'vpr_edge.'):\n"
        "    if m.name.split('.')[1] in ('training', 'export'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "heavy = sorted(n for n in ('torch', 'timm', 'onnx', 'tensorrt', 'cv2', 'rosbags')\n"
        "               if n in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, f"importing every runtime module failed:\n{out.stderr}"
    assert out.stdout.strip() == "", f"importing the runtime pulled in: {out.stdout.strip()}"


def test_every_package_directory_is_listed_in_pyproject() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for package, directory in PACKAGE_ROOTS.items():
        root = REPO_ROOT / directory
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join((package, *rel.parts)) if rel.parts else package)
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"


def test_package_dir_mapping_matches_design() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == PACKAGE_ROOTS


_FORBIDDEN_IMPORT = re.compile(
    r"^\s*(import|from)\s+(torch|timm|vpr_edge\.(training|export)|\.+(training|export))\b",
    re.MULTILINE,
)


def test_runtime_source_never_imports_torch_training_or_export() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0).strip()}"
        for path in (REPO_ROOT / "vpr_edge").rglob("*.py")
        for match in _FORBIDDEN_IMPORT.finditer(path.read_text())
    ]
    assert offenders == []


def _parsers(parser):
    """A parser and all its sub-command parsers."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_cli_has_help_without_noise(monkeypatch) -> None:
    """Each console script's help (and its sub-commands') shows meaningful defaults only."""
    import argparse
    import importlib

    built: list[argparse.ArgumentParser] = []
    real_parse = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        built.append(self)
        raise SystemExit(0)

    scripts = _pyproject()["project"]["scripts"]
    assert set(scripts) >= {"vpr-train", "vpr-eval", "vpr-export", "vpr-edge"}
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    for name, target in scripts.items():
        module, func = target.split(":")
        try:
            getattr(importlib.import_module(module), func)([])
        except SystemExit:
            pass
        assert built, f"{name} built no parser"
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real_parse)
    for parser in (p for top in built for p in _parsers(top)):
        text = parser.format_help()
        for noise in ("(default: None)", "(default: False)", "(default: True)"):
            assert noise not in text, f"{parser.prog}: help shows {noise!r}"
        undocumented = [a.dest for a in parser._actions if not a.help]
        assert undocumented == [], f"{parser.prog}: options without help: {undocumented}"


def _built(kind: str, tmp_path: Path) -> Path:
    """Build a ``wheel`` or ``sdist`` of a copy of the working tree, the way pip does
    (setuptools' PEP 517 hooks, with this environment's setuptools: no network)."""
    import shutil

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject's build-system needs it
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build this pyproject")
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis"))
    out = tmp_path / "out"
    code = (f"from setuptools import build_meta; "
            f"print(build_meta.build_{kind}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_holds_the_packages_and_the_licence(tmp_path: Path) -> None:
    """The wheel had no licence text (pyproject says Apache-2.0); it holds LICENSE, every
    package's modules and nothing of tests/, benchmarks/ or scripts/."""
    import zipfile

    names = zipfile.ZipFile(_built("wheel", tmp_path)).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for package, directory in PACKAGE_ROOTS.items():
        for module in (REPO_ROOT / directory).rglob("*.py"):
            rel = module.relative_to(REPO_ROOT / directory).as_posix()
            assert f"{package.replace('.', '/')}/{rel}" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts")]
    assert "vpr_edge/py.typed" in names  # else type checkers call every vpr_edge import Any


def test_every_public_name_is_importable_typed_and_listed() -> None:
    """`from vpr_edge import Localizer` was typed Any (an unannotated module __getattr__),
    so a type checker caught no misspelt method; the lazy names were missing from
    dir(vpr_edge) (tab completion, help()), and OutOfMemoryError and PlaceRecord, named in
    the docs, could not be imported from vpr_edge."""
    import ast

    import vpr_edge

    for name in vpr_edge.__all__:
        assert getattr(vpr_edge, name) is not None and name in dir(vpr_edge), name
    assert {"OutOfMemoryError", "PlaceRecord"} <= set(vpr_edge.__all__)
    tree = ast.parse((REPO_ROOT / "vpr_edge" / "__init__.py").read_text())
    typed = {alias.asname or alias.name for node in ast.walk(tree)
             if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
             for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    assert typed == set(vpr_edge._LAZY)  # each lazy name has its type for checkers
    getter = next(node for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
    assert getter.returns is not None


def test_the_sdist_holds_the_licence_and_no_loose_tests(tmp_path: Path) -> None:
    """setuptools put five top-level tests/test*.py files (not the rest of the suite) into
    the sdist; MANIFEST.in keeps tests out and the licence in."""
    import tarfile

    with tarfile.open(_built("sdist", tmp_path)) as sdist:
        names = [n.split("/", 1)[1] for n in sdist.getnames() if "/" in n]
    assert "LICENSE" in names and "pyproject.toml" in names and "vpr_edge/localizer.py" in names
    assert not [n for n in names if n.startswith("tests/")]
