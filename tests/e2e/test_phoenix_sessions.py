"""End to end: `convotel demo --otlp` into a real Arize Phoenix server, checked over GraphQL and
REST; the in-process demo and the web-service demo (`--serve`), one Phoenix server for both (see
``phoenix_e2e.py``).

The demo's loopback server is deterministic, so the same run id played into a SQLite store gives
the expected sessions; Phoenix must group the OTLP spans into the same sessions (by
``session.id``) with the same users, first inputs, last outputs, token counts and costs. The
users' feedback (``convotel.record_feedback``) must not disturb that: each feedback on a whole
session is one more trace there (its span is no root span, so the last output stays the turn's),
and with ``$CONVOTEL_PHOENIX_ENDPOINT`` set it is on the session (or turn) as an annotation.

With ``--serve`` every turn is a real HTTP request to the demo's FastAPI service: Phoenix must
show each trace rooted in the HTTP server span, the first input the user sent, the last reply the
user received and the tokens the loopback server billed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from phoenix_e2e import (
    FEEDBACK_SPAN,
    SESSION_ROOTS_QUERY,
    SESSIONS_QUERY,
    Phoenix,
    spans_in_phoenix,
    traces_in_phoenix,
    wait_for_sessions,
)

from convotel import cli
from convotel.demo import app as demo_app
from convotel.demo.bots import Reply
from convotel.demo.fake_replies import content_text, plan_reply
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.script import CONVERSATIONS, FEEDBACK, Conversation, ScriptedTurn
from convotel.feedback import PHOENIX_ENDPOINT_ENV
from convotel.sessions import Session
from convotel.store import SpanStore

pytestmark = pytest.mark.e2e

TOKEN_CAPS = ("max_completion_tokens", "max_tokens")
#: Feedback on a whole session, by conversation: each is one more trace of it in Phoenix.
SESSION_FEEDBACK = Counter(given.slug for given in FEEDBACK if given.turn is None)


def run_demo(*arguments: str, phoenix_endpoint: str | None = None) -> str:
    """``convotel demo`` with the feedback sent to ``phoenix_endpoint`` (if given) too."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(PHOENIX_ENDPOINT_ENV, raising=False)
        if phoenix_endpoint is not None:
            patch.setenv(PHOENIX_ENDPOINT_ENV, phoenix_endpoint)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["demo", *arguments])
    assert status == 0, f"demo failed ({status}):\n{out.getvalue()}\n{err.getvalue()}"
    assert not err.getvalue(), err.getvalue()  # e.g. feedback that did not reach Phoenix
    return out.getvalue()


@pytest.fixture(scope="module")
def expected_sessions(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Session]:
    """The same run played into a SQLite store: what Phoenix should show."""
    store = tmp_path_factory.mktemp("expected") / "spans.sqlite3"
    run_demo("--store", str(store), "--run-id", run_id)
    with SpanStore(store) as reader:
        return {session.session_id: session for session in reader.sessions()}


@pytest.fixture(scope="module")
def phoenix_sessions(
    phoenix: Phoenix, run_id: str, expected_sessions: dict[str, Session]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Run the demo into Phoenix, its feedback to Phoenix's REST API too, and wait until every
    session has all its traces."""
    phoenix.wait_until_healthy()  # it booted while `expected_sessions` ran the demo
    project = f"convotel-e2e-{run_id}"
    stdout = run_demo(
        "--otlp",
        f"{phoenix.base_url}/v1/traces",
        "--project",
        project,
        "--run-id",
        run_id,
        phoenix_endpoint=phoenix.base_url,
    )
    assert "Sessions tab" in stdout
    assert f"Phoenix at {phoenix.base_url} has it too" in stdout
    wanted = {sid: traces_in_phoenix(session) for sid, session in expected_sessions.items()}
    spans = spans_in_phoenix(expected_sessions.values())
    return project, wait_for_sessions(phoenix, project, wanted, spans)


def test_phoenix_groups_the_demo_traces_into_its_sessions(
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
    expected_sessions: dict[str, Session],
    run_id: str,
) -> None:
    _, found = phoenix_sessions
    assert set(found) == set(expected_sessions)
    assert set(found) == {c.session_id(run_id) for c in CONVERSATIONS}
    assert len(found) >= 5
    assert len({node["userId"] for node in found.values()}) >= 3


@pytest.mark.parametrize("slug", [c.slug for c in CONVERSATIONS])
def test_phoenix_session_has_the_user_first_input_last_output_and_tokens(
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
    expected_sessions: dict[str, Session],
    run_id: str,
    slug: str,
) -> None:
    conversation = next(c for c in CONVERSATIONS if c.slug == slug)
    session_id = conversation.session_id(run_id)
    expected = expected_sessions[session_id]
    node = phoenix_sessions[1][session_id]
    assert node["userId"] == conversation.user_id
    assert node["numTraces"] == len(conversation.turns) + SESSION_FEEDBACK[slug]
    assert node["firstInput"]["value"] == conversation.turns[0].text
    assert node["lastOutput"]["value"] == expected.last_output  # not the feedback's
    assert node["tokenUsage"]["prompt"] == expected.tokens.prompt > 0
    assert node["tokenUsage"]["completion"] == expected.tokens.completion > 0
    assert node["tokenUsage"]["total"] == expected.tokens.prompt + expected.tokens.completion


def test_phoenix_project_counts_every_turn_and_session_feedback_as_a_trace(
    phoenix: Phoenix,
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    project, _ = phoenix_sessions
    data = phoenix.graphql(SESSIONS_QUERY, {"name": project})["getProjectByName"]
    turns = sum(len(c.turns) for c in CONVERSATIONS)
    assert data["traceCount"] == turns + sum(SESSION_FEEDBACK.values())


def test_phoenix_rest_api_lists_the_same_sessions(
    phoenix: Phoenix,
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    project, found = phoenix_sessions
    listed = phoenix.rest(f"/v1/projects/{project}/sessions")
    session_ids = {item["session_id"] for item in listed["data"]}
    assert session_ids == set(found)


def conversation_of(slug: str) -> Conversation:
    return next(c for c in CONVERSATIONS if c.slug == slug)


def test_phoenix_has_the_demo_users_feedback_as_annotations(
    phoenix: Phoenix,
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
    run_id: str,
) -> None:
    project, found = phoenix_sessions
    on_sessions = [
        (a["session_id"], a["name"], a["result"], a["annotator_kind"], a["identifier"])
        for a in phoenix.annotations(project, "session", found)
    ]
    assert sorted(on_sessions) == sorted(
        (
            conversation_of(given.slug).session_id(run_id),
            given.name,
            {"label": given.label, "score": given.score, "explanation": given.explanation},
            "HUMAN",
            conversation_of(given.slug).user_id,  # the source: one annotation per source
        )
        for given in FEEDBACK
        if given.turn is None
    )
    roots = phoenix.graphql(SESSION_ROOTS_QUERY, {"name": project})["getProjectByName"]
    traces = {
        edge["node"]["sessionId"]: [
            trace["node"]["traceId"]
            for trace in edge["node"]["traces"]["edges"]  # oldest first
            if trace["node"]["rootSpan"]["name"] != FEEDBACK_SPAN
        ]
        for edge in roots["sessions"]["edges"]
    }
    on_turns = [given for given in FEEDBACK if given.turn is not None]
    assert on_turns
    for given in on_turns:
        turn_traces = traces[conversation_of(given.slug).session_id(run_id)]
        assert given.turn is not None
        (annotation,) = phoenix.annotations(project, "trace", turn_traces)  # that turn's alone
        assert annotation["trace_id"] == turn_traces[given.turn - 1]
        assert (annotation["name"], annotation["result"]["label"]) == (given.name, given.label)
        assert annotation["metadata"] == {"source": conversation_of(given.slug).user_id}


def test_phoenix_keeps_the_cost_convotel_put_on_each_llm_span(
    phoenix: Phoenix,
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
    expected_sessions: dict[str, Session],
) -> None:
    pytest.importorskip("genai_prices", reason="LLM spans are priced with genai-prices (3.11+)")
    project, _ = phoenix_sessions
    in_phoenix: dict[str, list[float]] = defaultdict(list)
    for span in phoenix.spans(project):
        attributes = span["attributes"]
        if span["span_kind"] == "LLM" and "llm.cost.total" in attributes:
            in_phoenix[attributes["session.id"]].append(attributes["llm.cost.total"])
    for session_id, session in expected_sessions.items():
        priced = [s.attributes.get("llm.cost.total") for s in session.spans if s.is_llm]
        recorded = sorted(cost for cost in priced if isinstance(cost, float))
        assert recorded, f"{session_id}: no LLM span was priced"
        assert sorted(in_phoenix[session_id]) == pytest.approx(recorded, rel=1e-9)
        assert session.cost_usd is not None
        assert math.isclose(sum(in_phoenix[session_id]), session.cost_usd, rel_tol=1e-9)


# -- the same run's store exported later (`convotel export`) ----------------------------------


def run_export(*arguments: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["export", *arguments])
    return status, out.getvalue(), err.getvalue()


SESSION_FIELDS = ("numTraces", "userId", "tokenUsage", "firstInput", "lastOutput")


def test_sessions_exported_later_look_like_the_sessions_sent_live(
    phoenix: Phoenix,
    phoenix_sessions: tuple[str, dict[str, dict[str, Any]]],
    run_id: str,
    tmp_path: Path,
) -> None:
    # The same conversations recorded into a store under another run id (Phoenix keeps one
    # session per id across projects), sent to Phoenix later by `convotel export`.
    later_run, project = f"{run_id}-later", f"convotel-e2e-export-{run_id}"
    store = tmp_path / "spans.sqlite3"
    run_demo("--store", str(store), "--run-id", later_run, "--project", project)
    endpoint = f"{phoenix.base_url}/v1/traces"
    status, out, err = run_export("--endpoint", endpoint, "--store", str(store))
    assert status == 0, err
    assert "Exported" in out

    with SpanStore(store) as reader:
        recorded = reader.sessions()
    wanted = {session.session_id: traces_in_phoenix(session) for session in recorded}
    spans = spans_in_phoenix(recorded)
    exported = wait_for_sessions(phoenix, project, wanted, spans)
    _, live = phoenix_sessions
    for conversation in CONVERSATIONS:
        sent_later = exported[conversation.session_id(later_run)]
        sent_live = live[conversation.session_id(run_id)]
        for field in SESSION_FIELDS:
            assert sent_later[field] == sent_live[field], (conversation.slug, field)

    # Repeating the export sends nothing: Phoenix still holds each span once.
    status, out, err = run_export("--endpoint", endpoint, "--store", str(store))
    assert status == 0, err
    assert "Nothing new to export" in out
    data = phoenix.graphql(SESSIONS_QUERY, {"name": project})["getProjectByName"]
    assert data["recordCount"] == spans
    assert data["traceCount"] == sum(wanted.values())


# -- the web-service demo (`--serve`) -----------------------------------------------------------


@dataclass(frozen=True)
class ServedRun:
    """`convotel demo --serve` played into Phoenix, and what happened on either side of it."""

    project: str
    run_id: str
    #: Phoenix's session nodes (SESSIONS_QUERY), by session id.
    found: dict[str, dict[str, Any]]
    #: (session id, what the user said) -> the reply text the user received over HTTP.
    received: dict[tuple[str, str], str]
    #: Session id -> (prompt, completion) tokens the loopback LLM server billed.
    billed: dict[str, tuple[int, int]]


def billed_by_session(llm_server: FakeLLMServer, run_id: str) -> dict[str, tuple[int, int]]:
    """The usage of every chat request the loopback server answered, summed per session (a
    request belongs to the conversation whose first message opens its history)."""
    session_of = {c.turns[0].text: c.session_id(run_id) for c in CONVERSATIONS}
    billed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for request in llm_server.served:
        if request.status != 200:
            continue  # the injected 429 and 500 answers bill nothing
        messages = request.body.get("messages") or []
        first = next(content_text(m.get("content")) for m in messages if m.get("role") == "user")
        plan = plan_reply(request.body, max_tokens_key=TOKEN_CAPS)
        billed[session_of[first]][0] += plan.prompt_tokens
        billed[session_of[first]][1] += plan.completion_tokens
    return {session_id: (prompt, completion) for session_id, (prompt, completion) in billed.items()}


@pytest.fixture(scope="module")
def served_run(
    phoenix: Phoenix, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> ServedRun:
    """Run `convotel demo --serve --otlp` into Phoenix, recording what each user received and
    what the loopback server billed, and wait until every session has all its traces."""
    web_users = pytest.importorskip("convotel.demo.web_users", reason="--serve needs fastapi")
    serve_run_id = f"{run_id}-web"  # session ids are unique across the whole Phoenix server
    project = f"convotel-e2e-web-{run_id}"
    llm_servers: list[FakeLLMServer] = []
    received: dict[tuple[str, str], str] = {}
    send_turn = web_users.send_turn

    class RecordedLLMServer(FakeLLMServer):
        def start(self) -> FakeLLMServer:
            llm_servers.append(self)
            return super().start()

    def recorded_send_turn(
        client: httpx.Client, conversation: Conversation, turn: ScriptedTurn
    ) -> Reply:
        reply: Reply = send_turn(client, conversation, turn)
        received[(str(client.headers["x-session-id"]), turn.text)] = reply.text
        return reply

    store = tmp_path_factory.mktemp("served") / "spans.sqlite3"  # what was sent, to count it
    phoenix.wait_until_healthy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_app, "FakeLLMServer", RecordedLLMServer)
        patch.setattr(web_users, "send_turn", recorded_send_turn)
        stdout = run_demo(
            "--serve",
            "--otlp",
            f"{phoenix.base_url}/v1/traces",
            "--project",
            project,
            "--run-id",
            serve_run_id,
            "--store",
            str(store),
        )
    assert "Chat service (FastAPI on uvicorn)" in stdout
    with SpanStore(store) as reader:
        recorded = reader.sessions()
    wanted = {session.session_id: traces_in_phoenix(session) for session in recorded}
    assert set(wanted) == {c.session_id(serve_run_id) for c in CONVERSATIONS}
    found = wait_for_sessions(phoenix, project, wanted, spans_in_phoenix(recorded))
    (llm_server,) = llm_servers
    return ServedRun(
        project, serve_run_id, found, received, billed_by_session(llm_server, serve_run_id)
    )


@pytest.mark.parametrize("slug", [c.slug for c in CONVERSATIONS])
def test_phoenix_web_session_has_the_turns_inputs_outputs_and_billed_tokens(
    served_run: ServedRun, slug: str
) -> None:
    conversation = next(c for c in CONVERSATIONS if c.slug == slug)
    session_id = conversation.session_id(served_run.run_id)
    node = served_run.found[session_id]
    last_said = conversation.turns[-1].text
    prompt, completion = served_run.billed[session_id]
    assert node["numTraces"] == len(conversation.turns) + SESSION_FEEDBACK[slug]
    assert node["userId"] == conversation.user_id
    assert node["firstInput"]["value"] == conversation.turns[0].text
    assert node["lastOutput"]["value"] == served_run.received[(session_id, last_said)]
    assert node["tokenUsage"] == {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
    }
    assert prompt > 0
    assert completion > 0


def test_phoenix_web_project_has_only_the_served_sessions(served_run: ServedRun) -> None:
    assert set(served_run.found) == {c.session_id(served_run.run_id) for c in CONVERSATIONS}


def test_phoenix_roots_every_web_trace_in_the_http_server_span(
    phoenix: Phoenix, served_run: ServedRun
) -> None:
    data = phoenix.graphql(SESSION_ROOTS_QUERY, {"name": served_run.project})["getProjectByName"]
    sessions = {edge["node"]["sessionId"]: edge["node"] for edge in data["sessions"]["edges"]}
    for conversation in CONVERSATIONS:
        session_id = conversation.session_id(served_run.run_id)
        traces = [edge["node"] for edge in sessions[session_id]["traces"]["edges"]]
        # Phoenix lists a trace by its earliest span without a parent it received: the feedback
        # span's parent is never exported, so it stands for the session feedback's own trace.
        feedback = [trace for trace in traces if trace["rootSpan"]["name"] == FEEDBACK_SPAN]
        assert len(feedback) == SESSION_FEEDBACK[conversation.slug]
        assert all(trace["rootSpan"]["parentId"] is not None for trace in feedback)
        traces = [trace for trace in traces if trace not in feedback]
        assert len(traces) == len(conversation.turns)
        for trace, said in zip(traces, conversation.turns, strict=True):  # oldest first
            root = trace["rootSpan"]
            route = "/chat/stream" if said.stream else "/chat"
            attributes = json.loads(root["attributes"])
            assert root["parentId"] is None
            assert root["name"] == f"POST {route}"
            assert attributes["http"]["route"] == route
            assert attributes["session"]["id"] == session_id
            assert attributes["user"]["id"] == conversation.user_id
            assert root["input"]["value"] == said.text
            assert root["output"]["value"] == served_run.received[(session_id, said.text)]
