"""Fixtures every test gets (helpers.py holds the shared functions)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's vdiskio
from vdiskio import settings  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No test inherits vdiskio's variables from the shell that runs pytest."""
    for name in settings.ALL:
        monkeypatch.delenv(name, raising=False)
