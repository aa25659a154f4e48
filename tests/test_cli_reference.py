"""docs/cli.md is every command's ``--help`` as the code prints it (scripts/cli_reference.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli_reference():
    pytest.importorskip("torch", reason="vpr-train and vpr-export need the train extra")
    spec = importlib.util.spec_from_file_location("cli_reference",
                                                  REPO / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_what_the_parsers_print(cli_reference, capsys) -> None:
    """An option added, renamed or given another default without rerunning the script fails
    here. argparse lays help out differently from one Python version to the next: on
    another version than the file's, every option must still be in it."""
    written = (REPO / "docs" / "cli.md").read_text()
    made_with = re.search(r"with\s+Python (\d+\.\d+)", written)
    assert made_with, "docs/cli.md does not say which Python made it"
    if made_with.group(1) == cli_reference.python_version():
        assert cli_reference.main(["--check"]) == 0, capsys.readouterr().out[-3000:]
        return
    options = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", cli_reference.reference()))
    missing = sorted(o for o in options if o not in written)
    assert not missing, f"docs/cli.md lacks {missing}: run python scripts/cli_reference.py"


def test_a_stale_reference_is_reported_with_the_fix(cli_reference, tmp_path, capsys) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(cli_reference.reference().replace("--min-inliers", "--inliers"))
    assert cli_reference.main(["--check", "--output", str(stale)]) == 1
    out = capsys.readouterr().out
    assert "+  --min-inliers" in out or "--min-inliers" in out
    assert "run python scripts/cli_reference.py" in out


def test_every_command_has_a_section(cli_reference) -> None:
    text = cli_reference.reference()
    for prog in ("vpr-train init", "vpr-train fit", "vpr-eval", "vpr-export",
                 "vpr-edge map build", "vpr-edge engine build", "vpr-edge loops",
                 "vpr-edge bench"):
        assert f"\n## {prog}\n" in text and f"usage: {prog} " in text
