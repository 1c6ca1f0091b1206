"""A store with known conversations for the ``convotel`` command tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

# The suite imports with --import-mode=importlib: make this folder's helper module importable.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from cli_store import write_scenario


@pytest.fixture(scope="module")
def scenario_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "spans.sqlite3"
    write_scenario(path, time.time_ns())
    return path


@pytest.fixture(autouse=True)
def fixed_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.delenv("CONVOTEL_STORE", raising=False)
