"""End to end: a provider's own conversation in a real Arize Phoenix server. OpenAI
``previous_response_id`` chains (#19), replayed from recorded cassettes through the real OpenAI
SDK and ``OpenAIInstrumentor`` with no session in force, must each be one Phoenix session, with
every turn's input, output and session source (see ``phoenix_e2e.py`` for the server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from phoenix_e2e import SESSION_ROOTS_QUERY, Phoenix, wait_for_sessions

pytestmark = pytest.mark.e2e

#: Recorded Responses API exchanges replayed through the real OpenAI SDK.
PROVIDER_CASSETTES = Path(__file__).resolve().parents[2] / "cassettes/openai/provider_sessions"
#: The five turns of `responses_chain_5.yaml`: what the user said, and the response ids.
CHAIN_QUESTIONS = (
    "I'm planning a trip to Lisbon.",
    "What should I see first?",
    "And where do I eat?",
    "How do I get around?",
    "Thanks, summarise it.",
)
CHAIN_IDS = tuple(f"resp_chain{n}0a1b2c3" for n in range(1, 6))
#: `responses_chains_interleaved.yaml`: turns of two chains alternate (A1, B1, A2, B2, A3).
ALPHA_IDS = tuple(f"resp_alpha{n}0a1b2c3" for n in range(1, 4))
BRAVO_IDS = tuple(f"resp_bravo{n}0a1b2c3" for n in range(1, 3))


class CassetteTransport(httpx.BaseTransport):
    """Answers the SDK's requests with a cassette's recorded responses, in order, after
    checking each request is the one recorded (method, URL and JSON body)."""

    def __init__(self, name: str) -> None:
        import yaml

        text = (PROVIDER_CASSETTES / f"{name}.yaml").read_text(encoding="utf-8")
        self.name = name
        self.interactions: list[dict[str, Any]] = yaml.safe_load(text)["interactions"]
        self.played = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        recorded = self.interactions[self.played]
        self.played += 1
        expected = recorded["request"]
        assert (request.method, str(request.url)) == (expected["method"], expected["uri"])
        assert json.loads(request.content) == json.loads(expected["body"])
        answer = recorded["response"]
        headers = {key: ", ".join(values) for key, values in answer["headers"].items()}
        body = answer["body"]["string"].encode()
        headers["content-length"] = str(len(body))
        return httpx.Response(answer["status"]["code"], headers=headers, content=body)


def chained_turn(client: Any, ids: tuple[str, ...], n: int) -> tuple[str, str]:
    """Turn ``n`` of the chain ``ids`` (continuing its previous response): what the user said
    and the reply."""
    previous = {"previous_response_id": ids[n - 1]} if n else {}
    said = CHAIN_QUESTIONS[n]
    response = client.responses.create(model="gpt-4o-mini", input=said, **previous)
    assert response.id == ids[n]
    return said, str(response.output_text)


#: Each cassette and its turns in the order recorded: (chain, turn number).
CHAINED_RECORDINGS = (
    ("responses_chain_5", tuple((CHAIN_IDS, n) for n in range(5))),
    (
        "responses_chains_interleaved",
        ((ALPHA_IDS, 0), (BRAVO_IDS, 0), (ALPHA_IDS, 1), (BRAVO_IDS, 1), (ALPHA_IDS, 2)),
    ),
)


@dataclass(frozen=True)
class ChainedRun:
    """The recorded chains played through the real SDK into Phoenix."""

    project: str
    #: Session id -> (what the user said, the reply) of each turn, in order.
    turns: dict[str, list[tuple[str, str]]]
    #: Phoenix's session nodes (SESSIONS_QUERY), by session id.
    found: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def chained_run(phoenix: Phoenix, run_id: str) -> ChainedRun:
    """A 5-turn `previous_response_id` chain and two interleaved chains, through the real
    OpenAI SDK and OpenAIInstrumentor with no session in force, exported to Phoenix."""
    openai = pytest.importorskip("openai")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from convotel.openai import OpenAIInstrumentor
    from convotel.openai.sessions import RESPONSE_CHAINS
    from convotel.propagation import SessionSpanProcessor

    phoenix.wait_until_healthy()
    project = f"convotel-e2e-chains-{run_id}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.base_url}/v1/traces"))
    )
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    RESPONSE_CHAINS.clear()
    turns: dict[str, list[tuple[str, str]]] = {}
    try:
        for cassette, order in CHAINED_RECORDINGS:
            transport = CassetteTransport(cassette)
            with httpx.Client(transport=transport) as http:
                client = openai.OpenAI(api_key="sk-test", http_client=http, max_retries=0)
                for ids, n in order:
                    turns.setdefault(ids[0], []).append(chained_turn(client, ids, n))
            assert transport.played == len(transport.interactions), cassette
    finally:
        instrumentor.uninstrument()
        RESPONSE_CHAINS.clear()
        provider.shutdown()
    wanted = {session_id: len(said) for session_id, said in turns.items()}
    return ChainedRun(project, turns, wait_for_sessions(phoenix, project, wanted, spans=10))


def test_phoenix_shows_a_previous_response_chain_as_one_session(chained_run: ChainedRun) -> None:
    node = chained_run.found[CHAIN_IDS[0]]  # the chain's first response id
    turns = chained_run.turns[CHAIN_IDS[0]]
    assert node["numTraces"] == len(CHAIN_QUESTIONS) == 5
    assert node["firstInput"]["value"] == CHAIN_QUESTIONS[0]
    assert node["lastOutput"]["value"] == turns[-1][1] == "Answer 4."
    assert node["tokenUsage"]["prompt"] > 0
    assert node["tokenUsage"]["completion"] > 0


def test_phoenix_keeps_interleaved_chains_apart(chained_run: ChainedRun) -> None:
    assert set(chained_run.found) == {CHAIN_IDS[0], ALPHA_IDS[0], BRAVO_IDS[0]}
    assert chained_run.found[ALPHA_IDS[0]]["numTraces"] == 3
    assert chained_run.found[BRAVO_IDS[0]]["numTraces"] == 2


def test_phoenix_shows_each_chained_turn_input_output_and_session_source(
    phoenix: Phoenix, chained_run: ChainedRun
) -> None:
    data = phoenix.graphql(SESSION_ROOTS_QUERY, {"name": chained_run.project})["getProjectByName"]
    sessions = {edge["node"]["sessionId"]: edge["node"] for edge in data["sessions"]["edges"]}
    for session_id, turns in chained_run.turns.items():
        traces = [edge["node"] for edge in sessions[session_id]["traces"]["edges"]]
        roots = [trace["rootSpan"] for trace in traces]
        shown = [(root["input"]["value"], root["output"]["value"]) for root in roots]
        assert shown == turns  # every turn, oldest first
        sources = []
        for root in roots:
            attributes = json.loads(root["attributes"])
            assert root["spanKind"] == "llm"
            assert attributes["session"]["id"] == session_id
            sources.append(attributes["convotel"]["session"]["source"])
        # The first response is its own session; every later turn continues its chain.
        assert sources == ["openai.response"] + ["openai.previous_response"] * (len(turns) - 1)
