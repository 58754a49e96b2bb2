"""The lint and format configuration in pyproject.toml ([tool.ruff]) holds over src/, tests/ and benchmarks/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(exe).is_file():
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    return [exe]


def test_ruff_is_clean():
    done = subprocess.run(
        [*_ruff(), "check", "--output-format", "concise", "src", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_ruff_format_is_clean():
    """`ruff format` leaves every file as it is (run it on what you changed; the diff stays about the change)."""
    done = subprocess.run(
        [*_ruff(), "format", "--check", "src", "tests", "benchmarks", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
