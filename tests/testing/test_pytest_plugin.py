"""The `convotel.testing` pytest plugin, run inside pytest's own `pytester` (messages included)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator

import pytest

import convotel

pytest_plugins = ["pytester"]

# Spans built by hand inside the inner tests: a turn is a CHAIN root plus one LLM child.
SPAN_HELPERS = """
from opentelemetry import trace as trace_api

def turn(spans, question, *, session=None, user=None, child_session="same", child_user="same",
         prompt=10, completion=5, answer="ok", error=None):
    tracer = spans.tracer_provider.get_tracer("inner-test")
    ids = {}
    if session is not None:
        ids["session.id"] = session
    if user is not None:
        ids["user.id"] = user
    child_ids = dict(ids)
    if child_session != "same":
        child_ids["session.id"] = child_session
    if child_user != "same":
        child_ids["user.id"] = child_user
    with tracer.start_as_current_span(
        "chat_turn",
        attributes={**ids, "openinference.span.kind": "CHAIN", "input.value": question},
    ) as root:
        with tracer.start_as_current_span(
            "ChatCompletion",
            attributes={
                **{k: v for k, v in child_ids.items() if v is not None},
                "openinference.span.kind": "LLM",
                "llm.token_count.prompt": prompt,
                "llm.token_count.completion": completion,
                "llm.token_count.total": prompt + completion,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": answer,
            },
        ) as llm:
            if error is not None:
                llm.set_status(trace_api.Status(trace_api.StatusCode.ERROR, error))
        root.set_attribute("output.value", answer)
"""


INNER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


# These inner tests make their spans by hand: no need to instrument the installed adapters.
HAND_MADE_SPANS_CONFTEST = """
import pytest

@pytest.fixture
def convotel_instrumentors():
    return []
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INNER_INI)
    pytester.makeconftest(HAND_MADE_SPANS_CONFTEST)
    pytester.makepyfile(span_helpers=SPAN_HELPERS)
    pytester.syspathinsert()
    return pytester


def run_inner(pytester: pytest.Pytester, test_source: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(test_source))
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")


def test_plugin_is_registered_and_inert_unless_its_fixture_is_used(
    inner: pytest.Pytester,
) -> None:
    result = run_inner(
        inner,
        """
        from opentelemetry import trace

        def test_untouched(request):
            assert request.config.pluginmanager.has_plugin("convotel")
            assert "convotel_spans" not in request.fixturenames
            assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        """,
    )

    result.assert_outcomes(passed=1)


def test_sessions_and_assertion_helpers_pass_on_a_good_conversation(
    inner: pytest.Pytester,
) -> None:
    result = run_inner(
        inner,
        """
        from convotel.sessions import TokenCounts
        from span_helpers import turn

        def test_two_sessions(convotel_spans):
            turn(convotel_spans, "hi", session="s-A", user="u-A", prompt=3, completion=2)
            turn(convotel_spans, "more", session="s-A", user="u-A", prompt=4, completion=1)
            turn(convotel_spans, "hello", session="s-B", user="u-B", error="boom")

            convotel_spans.assert_every_span_in_a_session()
            convotel_spans.assert_sessions_isolated()
            session = convotel_spans.assert_session(
                "s-A", user="u-A", turns=2, llm_calls=2, tokens=(7, 3, 10), errors=0,
                inputs=["hi", "more"],
            )
            assert session.last_output == "ok"
            convotel_spans.assert_session("s-B", tokens={"prompt": 10, "completion": 5,
                                          "total": 15}, errors=1)
            convotel_spans.assert_session("s-B", tokens=TokenCounts(10, 5, 15))
            assert [s.session_id for s in convotel_spans.sessions()] == ["s-A", "s-B"]
            assert len(convotel_spans.spans()) == 6

        def test_spans_do_not_carry_over_between_tests(convotel_spans):
            assert convotel_spans.spans() == []
        """,
    )

    result.assert_outcomes(passed=2)


def test_a_span_without_session_id_is_named_in_the_failure(inner: pytest.Pytester) -> None:
    result = run_inner(
        inner,
        """
        from span_helpers import turn

        def test_lost_session(convotel_spans):
            turn(convotel_spans, "hi", session="s-A", user="u-A", child_session=None)
            convotel_spans.assert_every_span_in_a_session(kinds=["LLM"])
        """,
    )

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*1 of 2 spans lack a session.id:",
            "*- span 'ChatCompletion' (LLM, trace *, span *)",
        ]
    )


def test_a_turn_leaking_into_another_session_is_named_in_the_failure(
    inner: pytest.Pytester,
) -> None:
    result = run_inner(
        inner,
        """
        from span_helpers import turn

        def test_leak(convotel_spans):
            turn(convotel_spans, "mine", session="s-A", user="u-A")
            turn(convotel_spans, "whose?", session="s-A", user="u-A", child_session="s-B")
            turn(convotel_spans, "from B", session="s-A", user="u-B")
            convotel_spans.assert_sessions_isolated()
        """,
    )

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*turns leaked between sessions:",
            "*- turn * (root 'chat_turn', input 'whose?') belongs to session 's-A', but its "
            "span 'ChatCompletion' (LLM, trace *, span *) carries session.id 's-B'",
            "*- turn * (root 'chat_turn', input 'from B') of session 's-A' (user 'u-A') carries "
            "user.id u-B: it leaked from another user's conversation",
        ]
    )


def test_assert_session_lists_every_mismatch_and_the_turns(inner: pytest.Pytester) -> None:
    result = run_inner(
        inner,
        """
        from span_helpers import turn

        def test_wrong_expectations(convotel_spans):
            turn(convotel_spans, "one", session="s-A", user="u-A")
            turn(convotel_spans, "two", session="s-A", user="u-A")
            convotel_spans.assert_session("s-A", user="u-Z", turns=1, tokens=(10, 5, 15),
                                          inputs=["one"])
        """,
    )

    result.assert_outcomes(failed=1)
    assert "  inputs: expected ['one'], got ['one', 'two']" in result.stdout.lines
    result.stdout.fnmatch_lines(
        [
            "*session 's-A' does not match:",
            "*  user: expected 'u-Z', got 'u-A'",
            "*  turns: expected 1, got 2",
            "*  tokens: expected TokenCounts(prompt=10, completion=5, total=15), "
            "got TokenCounts(prompt=20, completion=10, total=30)",
            "*session 's-A' (user 'u-A') has these turns:",
            "*  1. turn * (root 'chat_turn', input 'one') user 'u-A', 1 LLM calls, "
            "tokens 10/5/15, 0 errors",
            "*  2. turn * (root 'chat_turn', input 'two')*",
        ]
    )


def test_an_unknown_session_lists_what_there_is(inner: pytest.Pytester) -> None:
    result = run_inner(
        inner,
        """
        from span_helpers import turn

        def test_unknown(convotel_spans):
            turn(convotel_spans, "named", session="s-A", user="u-A")
            turn(convotel_spans, "anonymous")
            convotel_spans.session("s-X")

        def test_nothing_recorded(convotel_spans):
            convotel_spans.assert_every_span_in_a_session()
        """,
    )

    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*no session 's-X' among the finished spans.",
            "*session 's-A' (user 'u-A') has these turns:",
            "*1 turns carry no session.id:",
            "*- turn * (root 'chat_turn', input 'anonymous')",
        ]
    )
    result.stdout.fnmatch_lines(["*no spans finished: is the instrumentor installed and called?"])


def test_chosen_instrumentors_get_the_tracer_provider_and_options(
    inner: pytest.Pytester,
) -> None:
    result = run_inner(
        inner,
        """
        import pytest
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

        class Recording(BaseInstrumentor):
            calls = []
            def instrumentation_dependencies(self):
                return []
            def _instrument(self, **kwargs):
                self.calls.append(("instrument", kwargs))
            def _uninstrument(self, **kwargs):
                self.calls.append(("uninstrument", kwargs))

        @pytest.fixture
        def convotel_instrumentors():
            return [Recording()]

        @pytest.fixture
        def convotel_instrument_options():
            return {"config": "my-config"}

        def test_uses_them(convotel_spans):
            ((what, kwargs),) = Recording.calls
            assert what == "instrument"
            assert kwargs == {"tracer_provider": convotel_spans.tracer_provider,
                              "config": "my-config"}
            assert convotel_spans.instrumentors == (Recording(),)

        def test_uninstrumented_afterwards():
            assert [what for what, _ in Recording.calls] == ["instrument", "uninstrument"]
            assert not Recording().is_instrumented_by_opentelemetry

        def test_refuses_an_instrumentor_someone_else_instrumented(request):
            Recording().instrument()
            try:
                request.getfixturevalue("convotel_spans")
            finally:
                Recording().uninstrument()
        """,
    )

    result.assert_outcomes(passed=2, errors=0, failed=1)
    result.stdout.fnmatch_lines(
        ["*Recording already instrumented (by a conftest or a fixture?)*uninstrument() first*"]
    )


FAKE_ADAPTER = '''
"""A tiny convotel adapter over a fake chat client, discovered through its entry point."""
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.spans import Endpoint


class FakeClient:
    def complete(self, question):
        if question == "fail":
            raise RuntimeError("provider down")
        return {"answer": "echo: " + question, "prompt": len(question), "completion": 2}


ORIGINAL_COMPLETE = FakeClient.complete


class CompleteEndpoint(Endpoint):
    span_name = "FakeChat.complete"

    def request_attributes(self, instance, args, kwargs):
        yield "llm.input_messages.0.message.role", "user"
        yield "llm.input_messages.0.message.content", args[0]

    def response_attributes(self, response):
        yield "llm.output_messages.0.message.role", "assistant"
        yield "llm.output_messages.0.message.content", response["answer"]
        yield "llm.token_count.prompt", response["prompt"]
        yield "llm.token_count.completion", response["completion"]


class FakeChatInstrumentor(ConvotelInstrumentor):
    def instrumentation_dependencies(self):
        return ["pytest >= 7"]

    def wrap_targets(self):
        return [WrapTarget(__name__, "FakeClient.complete", CompleteEndpoint())]


class NeedsMissingPackageInstrumentor(ConvotelInstrumentor):
    def instrumentation_dependencies(self):
        return ["convotel-no-such-sdk >= 1"]

    def wrap_targets(self):
        return [WrapTarget(__name__, "FakeClient.complete", CompleteEndpoint())]
'''

ENTRY_POINTS = """
[opentelemetry_instrumentor]
fake_chat = convotel.fake_chat:FakeChatInstrumentor
needs_missing = convotel.fake_chat:NeedsMissingPackageInstrumentor
foreign = foreign_instrumentation:ForeignInstrumentor
"""

ADAPTER_CONFTEST = """
import pytest
from convotel.testing import discover_instrumentors


@pytest.fixture
def convotel_instrumentors():
    # Only the fake adapter: instrumenting every real adapter installed beside it (their SDKs
    # are heavy imports) would only slow this test down; the default is checked in the README
    # example test.
    found, _ = discover_instrumentors()
    return [i for i in found if type(i).__module__ == "convotel.fake_chat"]
"""

ADAPTER_TESTS = """
from concurrent.futures import ThreadPoolExecutor

from convotel import using_session, using_user
from convotel.fake_chat import ORIGINAL_COMPLETE, FakeChatInstrumentor, FakeClient
from convotel.testing import discover_instrumentors


def test_entry_points_under_convotel_are_discovered():
    found, skipped = discover_instrumentors()
    assert FakeChatInstrumentor() in found
    reasons = {s.name: s.reason for s in skipped}
    assert "convotel-no-such-sdk" in reasons["convotel.fake_chat:NeedsMissingPackageInstrumentor"]
    assert not any("foreign" in name for name in reasons)  # never even imported


def test_installed_instrumentors_are_applied_to_the_fixture_provider(convotel_spans):
    client = FakeClient()
    with using_session("s-A"), using_user("u-A"):
        client.complete("hello")
        client.complete("again")
    with using_session("s-B"), using_user("u-B"):
        try:
            client.complete("fail")
        except RuntimeError:
            pass

    assert convotel_spans.instrumentors == (FakeChatInstrumentor(),)
    assert FakeClient.complete is not ORIGINAL_COMPLETE
    convotel_spans.assert_every_span_in_a_session()
    convotel_spans.assert_sessions_isolated()
    session = convotel_spans.assert_session(
        "s-A", user="u-A", turns=2, llm_calls=2, tokens=(10, 4, 14), inputs=["hello", "again"]
    )
    assert session.last_output == "echo: again"
    convotel_spans.assert_session("s-B", user="u-B", turns=1, errors=1)


def test_the_instrumentor_is_removed_after_the_test():
    assert FakeClient.complete is ORIGINAL_COMPLETE
    assert not FakeChatInstrumentor().is_instrumented_by_opentelemetry


def test_a_thread_pool_that_drops_the_session_is_caught(convotel_spans):
    client = FakeClient()
    with using_session("s-A"), using_user("u-A"), ThreadPoolExecutor(1) as pool:
        pool.submit(client.complete, "from a worker thread").result()
    convotel_spans.assert_every_span_in_a_session()
"""


@pytest.fixture
def fake_adapter_installed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """``convotel.fake_chat`` installed the way a real adapter is: a ``convotel/<name>`` package
    plus a distribution whose entry points name it (and a foreign one that must be ignored)."""
    adapter = pytester.mkdir("convotel") / "fake_chat"
    adapter.mkdir()
    (adapter / "__init__.py").write_text(FAKE_ADAPTER)
    dist_info = pytester.mkdir("fake_convotel_chat-0.1.dist-info")
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-convotel-chat\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    pytester.makepyfile(
        foreign_instrumentation="raise ImportError('a foreign instrumentor must not be loaded')"
    )
    pytester.syspathinsert()
    # What pkgutil.extend_path in convotel/__init__.py does for a directory on sys.path.
    monkeypatch.setattr(convotel, "__path__", [*convotel.__path__, str(pytester.path / "convotel")])
    yield
    sys.modules.pop("convotel.fake_chat", None)


@pytest.mark.usefixtures("fake_adapter_installed")
def test_installed_convotel_instrumentors_are_discovered_and_removed_afterwards(
    pytester: pytest.Pytester,
) -> None:
    """A real adapter (a ConvotelInstrumentor) found through its entry point."""
    pytester.makeini(INNER_INI)
    pytester.makeconftest(ADAPTER_CONFTEST)
    pytester.makepyfile(test_adapter=ADAPTER_TESTS)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*1 of 1 spans lack a session.id:",
            "*- span 'FakeChat.complete' (LLM, trace *, span *)",
        ]
    )
