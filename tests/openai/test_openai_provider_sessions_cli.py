"""`convotel sessions` sees provider sessions like any other and can filter them by source."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from openai_wire import API_KEY
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from provider_session_wire import CHAIN, CONVERSATION, RECIPES
from test_openai_provider_sessions import replay

from convotel import TraceConfig, using_session
from convotel.cli import main
from convotel.openai import OpenAIInstrumentor
from convotel.openai.sessions import RESPONSE_CHAINS
from convotel.propagation import SessionSpanProcessor
from convotel.store.exporter import SQLiteSpanExporter

RECIPE = {recipe.name: recipe for recipe in RECIPES}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "spans.db"
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, config=TraceConfig())
    RESPONSE_CHAINS.clear()
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    try:
        for name in ("responses_chain_5", "responses_conversation"):
            with replay(name):
                RECIPE[name].call(client)
        with replay("responses_conversation"), using_session("app-session-1"):
            RECIPE["responses_conversation"].call(client)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        RESPONSE_CHAINS.clear()
    return path


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, dict[str, object]]:
    assert main(["sessions", "--json", *argv]) == 0
    return {s["session_id"]: s for s in json.loads(capsys.readouterr().out)}


def test_sessions_lists_provider_sessions_with_their_source(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = listed(capsys, "--store", str(store))
    assert {sid: (s["source"], s["turn_count"]) for sid, s in found.items()} == {
        CHAIN[0]: ("openai.response", 5),
        CONVERSATION: ("openai.conversation", 2),
        "app-session-1": ("context", 2),
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("openai.conversation", {CONVERSATION}),
        ("context", {"app-session-1"}),
        ("mistral.conversation", set()),
    ],
)
def test_sessions_can_be_filtered_by_source(
    store: Path, capsys: pytest.CaptureFixture[str], source: str, expected: set[str]
) -> None:
    assert set(listed(capsys, "--store", str(store), "--source", source)) == expected


def test_sessions_table_and_show_name_the_source(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "180")  # room for the whole ids beside the COST column
    assert main(["sessions", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["SESSION", "FROM"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows[CHAIN[0]].split()[1:3] == ["openai", "chain"]
    assert rows[CONVERSATION].split()[1:3] == ["openai", "conv"]
    assert rows["app-session-1"].split()[1] == "-"
    assert main(["sessions", "show", CHAIN[0], "--store", str(store)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1] == "Source    openai.response (the provider's own conversation)"
