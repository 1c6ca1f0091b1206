"""`convotel_spans.assert_session(..., max_cost=...)`: a ceiling on a session's cost in USD,
through the real OpenAI SDK and cassettes inside pytest's own `pytester`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytest.importorskip("genai_prices")
pytest.importorskip("convotel.openai", reason="the inner tests call the OpenAI SDK")
pytest_plugins = ["pytester"]

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"

HELPERS = f"""
import openai
import vcr

REPLAY = vcr.VCR(
    record_mode="none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    decode_compressed_response=True,
)
MESSAGES = [
    {{"role": "system", "content": "You are a terse geography tutor."}},
    {{"role": "user", "content": "What is the capital of France?"}},
]


def ask(model="gpt-4o-mini", cassette="openai/chat_basic"):
    with REPLAY.use_cassette({str(CASSETTES)!r} + "/" + cassette + ".yaml"):
        openai.OpenAI(api_key="sk-test", max_retries=0).chat.completions.create(
            model=model, messages=MESSAGES, temperature=0.2, max_tokens=50,
            user="end-user-hash",
        )
"""


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        "import pytest\nfrom convotel.openai import OpenAIInstrumentor\n\n"
        "@pytest.fixture\ndef convotel_instrumentors():\n    return [OpenAIInstrumentor()]\n"
    )
    pytester.makepyfile(cost_helpers=HELPERS)
    pytester.syspathinsert()
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")


def test_max_cost_passes_under_the_ceiling_and_fails_over_it(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        from convotel import using_session
        from cost_helpers import ask

        def test_under(convotel_spans):
            with using_session("s-cheap"):
                ask()
                ask()
            session = convotel_spans.assert_session("s-cheap", turns=2, max_cost=0.001)
            assert 0 < session.cost_usd < 0.001

        def test_over(convotel_spans):
            with using_session("s-dear"):
                ask()
            convotel_spans.assert_session("s-dear", max_cost=0.000001)
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*session 's-dear' does not match:*",
            "*max_cost: expected at most $1e-06, got $8.4e-06*",
            "*cost $8.4e-06*",
        ]
    )


def test_max_cost_fails_when_a_model_call_has_no_price(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        from convotel import using_session
        from cost_helpers import ask

        def test_unknown_model(convotel_spans):
            with using_session("s-unknown"):
                ask()
                ask("acme-chat-7b", "cost/openai_chat_unknown_model")
            convotel_spans.assert_session("s-unknown", max_cost=1.0)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_cost: expected at most $1.0, but 1 of its 2 model calls*"])
