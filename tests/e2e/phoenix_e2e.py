"""A real Arize Phoenix server for the end-to-end tests, and how they read it back (GraphQL and
REST). ``conftest.py`` starts one for the whole run (``phoenix`` fixture).

Phoenix (``arize-phoenix==20.26.1``, ~850 MB) lives in its own virtualenv; point
``CONVOTEL_PHOENIX_BIN`` at that venv's ``phoenix`` executable (``nox -s e2e`` does). It runs on
127.0.0.1 with a fresh working directory and every outbound fetch disabled.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convotel.sessions import Session

PHOENIX_BIN_ENV = "CONVOTEL_PHOENIX_BIN"
STARTUP_TIMEOUT_S = 180.0  # ~8 s on an idle 2-core machine; much more when it is busy
ARRIVAL_TIMEOUT_S = 60.0
OFFLINE_PHOENIX_ENV = {
    "PHOENIX_HOST": "127.0.0.1",
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_LOG_MIGRATIONS": "false",
}
SESSIONS_QUERY = """
query ($name: String!) {
  getProjectByName(name: $name) {
    traceCount
    recordCount
    sessions(first: 100) {
      edges { node {
        sessionId numTraces userId
        tokenUsage { prompt completion total }
        firstInput { value }
        lastOutput { value }
      } }
    }
  }
}
"""
#: Each session's traces and what Phoenix takes as each trace's root span.
SESSION_ROOTS_QUERY = """
query ($name: String!) {
  getProjectByName(name: $name) {
    sessions(first: 100) {
      edges { node {
        sessionId
        traces(first: 20) { edges { node {
          traceId
          rootSpan { name spanKind parentId attributes input { value } output { value } }
        } } }
      } }
    }
  }
}
"""
#: The name of convotel's feedback spans (``convotel.record_feedback``).
FEEDBACK_SPAN = "convotel.feedback"


@dataclass(frozen=True)
class Phoenix:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not healthy(self.base_url):
            if self.process.poll() is not None:
                pytest.fail(f"phoenix exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix not healthy after {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer["errors"]
        data: dict[str, Any] = answer["data"]
        return data

    def rest(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def annotations(self, project: str, kind: str, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The ``kind`` (``session`` or ``trace``) annotations of ``ids`` in ``project``, as
        Phoenix's REST API lists them (newest first)."""
        query = urllib.parse.urlencode([(f"{kind}_ids", i) for i in ids] + [("limit", "1000")])
        listed: list[dict[str, Any]] = self.rest(
            f"/v1/projects/{project}/{kind}_annotations?{query}"
        )["data"]
        return listed

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` as Phoenix's REST API returns it (flat attribute keys)."""
        found: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = self.rest(f"/v1/projects/{project}/spans?limit=1000{cursor}")
            found += page["data"]
            if not page.get("next_cursor"):
                return found
            cursor = f"&cursor={urllib.parse.quote(page['next_cursor'])}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def serve_phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Start ``$CONVOTEL_PHOENIX_BIN serve`` offline on free ports with a fresh working directory
    (it is healthy some seconds later: :meth:`Phoenix.wait_until_healthy`); stop it after."""
    binary = os.environ.get(PHOENIX_BIN_ENV)
    if not binary:
        pytest.skip(
            f"{PHOENIX_BIN_ENV} is not set: point it at the `phoenix` executable of a venv with "
            "arize-phoenix==20.26.1 (`nox -s e2e` builds one)"
        )
    if not Path(binary).is_file():
        pytest.fail(f"{PHOENIX_BIN_ENV}={binary} does not exist")
    workdir = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        **OFFLINE_PHOENIX_ENV,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
    }
    log_path = workdir / "phoenix.log"
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            yield Phoenix(base_url, log_path, process)  # started; healthy a few seconds later
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_sessions(
    phoenix: Phoenix, project: str, wanted: dict[str, int], spans: int
) -> dict[str, dict[str, Any]]:
    """The project's sessions once each of ``wanted`` (session id -> traces) has all its traces
    and all ``spans`` spans are stored (Phoenix inserts in batches: a trace can be counted
    before its last spans, and so its tokens and output, are in)."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline:
        data = phoenix.graphql(SESSIONS_QUERY, {"name": project})["getProjectByName"] or {}
        edges = data.get("sessions", {}).get("edges", [])
        found = {edge["node"]["sessionId"]: edge["node"] for edge in edges}
        complete = all(found.get(sid, {}).get("numTraces") == n for sid, n in wanted.items())
        if complete and data.get("recordCount") == spans:
            return found
        time.sleep(0.2)
    pytest.fail(f"sessions did not all arrive in Phoenix: {found}\n{phoenix.log_tail()}")


def traces_in_phoenix(session: Session) -> int:
    """How many traces Phoenix counts in ``session`` once its spans (feedback too) are in: one
    per turn, and one per feedback on the whole session (a turn's sits in the turn's trace)."""
    return len(session.turns) + sum(1 for given in session.feedback if given.turn is None)


def spans_in_phoenix(sessions: Iterable[Session]) -> int:
    """How many spans Phoenix stores for ``sessions``: their turns' and their feedback's."""
    return sum(len(session.spans) + len(session.feedback) for session in sessions)
