"""Fixtures for the reliability suite (`nox -s reliability`): load, faults, bad input, secrets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helper modules beside this file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is a reliability test (run by `nox -s reliability`)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)
