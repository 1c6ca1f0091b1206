"""One real Phoenix server and one run id for every end-to-end test module."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # phoenix_e2e, the modules' shared helpers

from phoenix_e2e import Phoenix, serve_phoenix


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """The Phoenix server, started (healthy a few seconds later: ``wait_until_healthy``)."""
    yield from serve_phoenix(tmp_path_factory)


@pytest.fixture(scope="session")
def run_id() -> str:
    """This run's suffix of project names and session ids (Phoenix keeps one session per id
    across projects)."""
    return uuid.uuid4().hex[:8]
