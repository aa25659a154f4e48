"""scripts/python_versions.sh (the runtime's tests on other Pythons) reports what it could not
run and fails, rather than passing with nothing tested."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_an_interpreter_that_does_not_run_is_a_failure(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(REPO / "scripts" / "python_versions.sh"),
                          str(tmp_path / "no-python")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert f"{tmp_path / 'no-python'}: cannot run" in run.stdout
