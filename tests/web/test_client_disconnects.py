"""Clients that go away mid-stream: every span of the turn still ends, in its session; the root
records the disconnect; the model stream ends closed early with its partial reply, not as an
error; concurrent requests never mix their ids."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from chat_service import chat_service
from live_servers import LiveASGIServer, wait_for_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from convotel import cli
from convotel.demo.fake_server import FakeLLMServer
from convotel.store import SQLiteSpanExporter
from convotel.web import CLIENT_DISCONNECTED

pytestmark = pytest.mark.usefixtures("openai_instrumented")


def roots(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None and s.kind is SpanKind.SERVER]


def model_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("openinference.span.kind") == "LLM"]


async def converse(
    client: httpx.AsyncClient, url: str, number: int, sessions: int, disconnect: bool
) -> None:
    headers = {"x-session-id": f"s-{number % sessions}", "x-user-id": f"u-{number % sessions}"}
    body = {"messages": [{"role": "user", "content": f"Question {number}: tell me a story"}]}
    async with client.stream("POST", f"{url}/chat/stream", json=body, headers=headers) as reply:
        async for line in reply.aiter_lines():
            if disconnect and line.startswith("data: "):
                break  # leaving the block closes the connection: the tab was closed


def test_a_client_that_goes_away_mid_stream_ends_every_span_in_its_session(
    web_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "spans.sqlite3"
    web_provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(store)))
    app = chat_service(web_provider, llm_server.openai_base_url, chunk_delay=0.05)

    async def run(url: str) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await converse(client, url, 7, 1000, disconnect=True)

    with LiveASGIServer(app) as server:
        asyncio.run(run(server.url))
        spans = wait_for_spans(span_exporter, lambda found: roots(found) and model_spans(found))
    (root,) = roots(spans)
    (model,) = model_spans(spans)
    assert root.attributes[CLIENT_DISCONNECTED] is True
    assert any(event.name == "client disconnected" for event in root.events)
    assert model.attributes["convotel.stream.outcome"] == "closed_early"
    assert model.attributes[CLIENT_DISCONNECTED] is True
    assert model.status.status_code is not StatusCode.ERROR
    partial = model.attributes["llm.output_messages.0.message.content"]
    assert isinstance(partial, str)
    assert partial
    assert root.attributes["output.value"] == partial
    assert {s.attributes.get("session.id") for s in spans} == {"s-7"}

    # A user finds such turns: `convotel sessions show` and its JSON say the client went away.
    web_provider.force_flush()
    assert cli.main(["sessions", "--store", str(store), "show", "s-7"]) == 0
    assert "client went away" in capsys.readouterr().out
    assert cli.main(["sessions", "--store", str(store), "show", "s-7", "--json"]) == 0
    (turn,) = json.loads(capsys.readouterr().out)["turns"]
    assert turn["client_disconnected"] is True
    assert turn["output"] == partial


def test_many_concurrent_streams_with_disconnects_keep_their_own_ids_and_all_end(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    requests, sessions = 200, 50
    app = chat_service(web_provider, llm_server.openai_base_url, chunk_delay=0.02)

    async def run(url: str) -> None:
        limits = httpx.Limits(max_connections=requests)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(
                *(
                    converse(client, url, number, sessions, disconnect=number % 4 == 0)
                    for number in range(requests)
                )
            )

    with LiveASGIServer(app) as server:
        asyncio.run(run(server.url))
        spans = wait_for_spans(
            span_exporter,
            lambda found: len(roots(found)) == requests and len(model_spans(found)) == requests,
            timeout=60,
        )
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    assert len(roots(spans)) == requests
    assert len(model_spans(spans)) == requests
    assert len(by_trace) == requests
    disconnected = Counter[bool]()
    for trace_spans in by_trace.values():
        (root,) = roots(trace_spans)
        (model,) = model_spans(trace_spans)
        number = int(str(root.attributes["input.value"]).split(":")[0].removeprefix("Question "))
        expected = (f"s-{number % sessions}", f"u-{number % sessions}")
        for span in trace_spans:
            assert (span.attributes.get("session.id"), span.attributes.get("user.id")) == expected
        gone = root.attributes.get(CLIENT_DISCONNECTED) is True
        disconnected[gone] += 1
        assert gone == (number % 4 == 0)
        outcome = model.attributes["convotel.stream.outcome"]
        assert outcome == ("closed_early" if gone else "completed")
        assert model.status.status_code is not StatusCode.ERROR
    assert disconnected == {True: requests // 4, False: requests - requests // 4}
