"""The README's example: replay a cassette through the OpenAI SDK inside `using_session` and
assert on the session with the `convotel_spans` fixture (needs openai and convotel-openai)."""

from __future__ import annotations

from pathlib import Path

import pytest
import vcr

from convotel import using_session, using_user
from convotel.testing import CapturedSpans

openai = pytest.importorskip("openai")
pytest.importorskip("convotel.openai")

replay = vcr.VCR(
    cassette_library_dir=str(Path(__file__).resolve().parents[2] / "cassettes" / "openai"),
    record_mode="none",  # a request the cassette does not hold fails the test
    match_on=("method", "scheme", "host", "port", "path"),
)


def test_capital_question_lands_in_the_callers_session(convotel_spans: CapturedSpans) -> None:
    client = openai.OpenAI(api_key="sk-test", max_retries=0)
    with replay.use_cassette("chat_basic.yaml"), using_session("chat-42"), using_user("u-7"):
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You are a terse geography tutor."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            max_tokens=50,
            temperature=0.2,
            user="end-user-hash",
        )

    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert "OpenAIInstrumentor" in {type(i).__name__ for i in convotel_spans.instrumentors}
    convotel_spans.assert_every_span_in_a_session()
    convotel_spans.assert_sessions_isolated()
    session = convotel_spans.assert_session(
        "chat-42", user="u-7", turns=1, llm_calls=1, tokens=(24, 8, 32), errors=0
    )
    assert session.first_input == "What is the capital of France?"
    assert session.last_output == "The capital of France is Paris."


def test_the_openai_sdk_is_restored_after_the_fixture() -> None:
    from convotel.openai import OpenAIInstrumentor

    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry
