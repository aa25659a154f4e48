"""The code passes ruff's pycodestyle, pyflakes and import-order rules (``[tool.ruff]`` in
pyproject.toml): unused imports, undefined names and overlong lines fail the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    pytest.importorskip("ruff", reason="ruff comes with vpr-edge[dev]")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--output-format", "concise", str(REPO_ROOT)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
