"""A span store written through the real OpenAI SDK from cassettes: priced and unpriced calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import vcr
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from convotel import TraceConfig, using_session, using_user
from convotel.openai import OpenAIInstrumentor
from convotel.store.exporter import SQLiteSpanExporter

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
REPLAY = vcr.VCR(
    record_mode="none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    decode_compressed_response=True,
)
MESSAGES: Any = [
    {"role": "system", "content": "You are a terse geography tutor."},
    {"role": "user", "content": "What is the capital of France?"},
]


def replay(folder: str, name: str) -> Any:
    return REPLAY.use_cassette(str(CASSETTES / folder / f"{name}.yaml"))


def basic_chat(client: openai.OpenAI, model: str = "gpt-4o-mini") -> None:
    client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=0.2, max_tokens=50, user="end-user-hash"
    )


def reasoning_chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="o4-mini",
        messages=[{"role": "user", "content": "The answer to everything?"}],
        reasoning_effort="low",
    )


def write_cost_store(path: Path) -> None:
    """``s-priced`` (alice): gpt-4o-mini then o4-mini with cached and reasoning tokens;
    ``s-mixed`` (alice): gpt-4o-mini then an unknown model; ``s-unknown`` (bob): unknown only."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, config=TraceConfig())
    client = openai.OpenAI(api_key="sk-test", max_retries=0)
    try:
        with using_user("alice"):
            with using_session("s-priced"):
                with replay("openai", "chat_basic"):
                    basic_chat(client)
                with replay("openai", "chat_reasoning_cached"):
                    reasoning_chat(client)
            with using_session("s-mixed"):
                with replay("openai", "chat_basic"):
                    basic_chat(client)
                with replay("cost", "openai_chat_unknown_model"):
                    basic_chat(client, "acme-chat-7b")
        with (
            using_user("bob"),
            using_session("s-unknown"),
            replay("cost", "openai_chat_unknown_model"),
        ):
            basic_chat(client, "acme-chat-7b")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
