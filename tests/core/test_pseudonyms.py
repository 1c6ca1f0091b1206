"""Pseudonymous user ids (``convotel.pseudonyms``): a keyed hash everywhere a user id goes."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Collection, Iterator, Sequence

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import (
    TraceConfig,
    get_attributes_from_context,
    pseudonyms,
    set_user,
    using_attributes,
    using_user,
)
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.logs import SessionLogFilter
from convotel.propagation import SessionBaggagePropagator, SessionSpanProcessor
from convotel.pseudonyms import (
    USER_ID_KEY_ENV,
    configure_user_id_key,
    pseudonymous_user_id,
    recorded_user_id,
)

KEY = "k3y-never-to-be-seen"


@pytest.fixture
def keyed() -> Iterator[str]:
    """The process's user ids pseudonymised with :data:`KEY` for the test."""
    configure_user_id_key(KEY)
    try:
        yield pseudonymous_user_id("alice")
    finally:
        pseudonyms._configured.clear()  # back to "the environment decides"


def user() -> object:
    return dict(get_attributes_from_context()).get("user.id")


def test_without_a_key_ids_are_recorded_as_given() -> None:
    assert os.environ.get(USER_ID_KEY_ENV) is None
    with using_user("alice"):
        assert user() == "alice"
    assert recorded_user_id("alice") == "alice"


def test_every_way_in_records_the_pseudonym(keyed: str) -> None:
    assert re.fullmatch(r"u-[0-9a-f]{32}", keyed)
    assert keyed != "alice"
    assert keyed == pseudonymous_user_id("alice", key=KEY)
    assert pseudonymous_user_id("alice", key="another key") != keyed
    with using_user("alice"):
        assert user() == keyed
    with using_attributes(user_id="alice"):
        assert user() == keyed
    assert dict(get_attributes_from_context(set_user(context_api.Context(), "alice"))) == {
        "user.id": keyed
    }
    with using_user(keyed):  # already a pseudonym: kept, not hashed twice
        assert user() == keyed


def test_spans_logs_and_baggage_see_only_the_pseudonym(
    keyed: str, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    handler_filter = SessionLogFilter()
    carrier: dict[str, str] = {}
    with caplog.at_level(logging.DEBUG), using_user("alice"):
        with tracer.start_as_current_span("turn"):
            record = logging.LogRecord("app", logging.INFO, __file__, 1, "answered", None, None)
            handler_filter.filter(record)
            logging.getLogger("app").info("answered")
        SessionBaggagePropagator().inject(carrier)

    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["user.id"] == keyed
    assert record.user_id == keyed  # type: ignore[attr-defined]
    assert carrier["baggage"] == f"user.id={keyed}"
    restored = SessionBaggagePropagator().extract(carrier)  # a service sharing the key
    assert dict(get_attributes_from_context(restored))["user.id"] == keyed
    everything = f"{span.to_json()} {carrier} {caplog.text}"
    assert "alice" not in everything
    assert KEY not in everything


def test_the_same_key_gives_the_same_pseudonym_in_another_process(keyed: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convotel.pseudonyms", "alice", "bob"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, USER_ID_KEY_ENV: KEY, "PYTHONHASHSEED": "7"},
    )
    assert done.stdout.split() == [keyed, pseudonymous_user_id("bob")]
    assert KEY not in done.stdout + done.stderr


def test_the_command_without_a_key_explains_and_fails() -> None:
    environment = {k: v for k, v in os.environ.items() if k != USER_ID_KEY_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "convotel.pseudonyms", "alice"],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert done.returncode == 2
    assert USER_ID_KEY_ENV in done.stdout


@pytest.mark.parametrize("bad", ["", b"", 42])
def test_a_bad_key_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="user id key must be a non-empty string or bytes"):
        configure_user_id_key(bad)  # type: ignore[arg-type]


def test_no_key_and_no_argument_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=f"no user id key: set {USER_ID_KEY_ENV}"):
        pseudonymous_user_id("alice")


def test_a_trace_config_key_becomes_the_process_key_when_instrumenting() -> None:
    class NothingToWrap(ConvotelInstrumentor):
        instrumentation_name = "convotel.tests.nothing"

        def instrumentation_dependencies(self) -> Collection[str]:
            return ()

        def wrap_targets(self) -> Sequence[WrapTarget]:
            return ()

    config = TraceConfig(user_id_key=KEY)
    assert KEY not in repr(config)
    instrumentor = NothingToWrap()
    instrumentor.instrument(tracer_provider=TracerProvider(), config=config)
    try:
        with using_user("alice"):
            assert user() == pseudonymous_user_id("alice", key=KEY)
    finally:
        instrumentor.uninstrument()
        pseudonyms._configured.clear()
