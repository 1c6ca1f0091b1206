"""How a call's span ends: one state machine for every way a call or its stream can end.

Every ending path goes through :func:`end_call` (through :class:`CallFinish` for a call that
may become a stream): the core's wrappers and stream proxies, adapters' deferred responses
(OpenAI's ``.with_streaming_response``) and framework callbacks (LlamaIndex's calls and their
streams). The rule below is written once:

============================================  ==================  =========================
how the call ended                            outcome             status
============================================  ==================  =========================
returned (not a stream)                       (none)              OK
raised (not a stream)                         (none)              ERROR, exception recorded
stream exhausted                              ``completed``       OK
stream closed / ``with`` exit, exhausted      ``completed``       OK
stream closed / ``with`` exit, not exhausted  ``closed_early``    OK
stream stopped by a cancelled task or a       ``closed_early``    OK
closed generator (:func:`stream_outcome_for`)
stream raised anything else                   ``error``           ERROR, exception recorded
provider reported a failure in the stream     ``error``           ERROR (``error.type``)
stream collected unfinished                   ``abandoned``       unset
… after its reader went away (web client      ``closed_early``    OK (plus the watch's
gone, :class:`StreamWatch`)                                       attributes)
============================================  ==================  =========================

A stream also records its time to first token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from opentelemetry import context as context_api
from opentelemetry.context import Context

from convotel.call_span import CallSpan, Pair, log_once
from convotel.collected_ends import end_outside_collection, watch_collections

__all__ = [
    "STREAM_OUTCOME",
    "TIME_TO_FIRST_TOKEN_MS",
    "CallFinish",
    "StreamAccumulator",
    "StreamError",
    "StreamOutcome",
    "StreamWatch",
    "end_call",
    "stream_outcome_for",
]

#: How a streamed call ended: one of :class:`StreamOutcome`'s values.
STREAM_OUTCOME = "convotel.stream.outcome"
#: Milliseconds from the start of the call to the first streamed chunk.
TIME_TO_FIRST_TOKEN_MS = "convotel.stream.time_to_first_token_ms"

_WATCHED_STREAMS_KEY = context_api.create_key("convotel-watched-streams")
#: How long :meth:`StreamWatch.close_open` waits for a stream another thread is ending.
_SETTLE_TIMEOUT_S = 1.0
#: How many streams a watch holds before it drops the ones that have ended.
_PRUNE_AT = 8


class StreamOutcome(str, Enum):
    """Values of :data:`STREAM_OUTCOME`."""

    COMPLETED = "completed"
    CLOSED_EARLY = "closed_early"
    ERROR = "error"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class StreamError:
    """A failure the provider reported inside a stream that was delivered successfully."""

    #: The span's status description: the provider's message.
    description: str
    #: The ``error.type`` attribute: the provider's error code, else the event's type.
    type: str


class StreamAccumulator(Protocol):
    """Collects what a stream's chunks say, for the attributes recorded when it ends.

    An accumulator may also define ``error() -> StreamError | None``: a :class:`StreamError` when
    the provider said, in the stream, that the call failed. The span then ends with status ERROR
    and outcome ``error`` however the stream ended; every chunk still reaches the application.
    """

    def process(self, chunk: Any) -> bool | None:
        """Look at one chunk; return ``False`` to hide it from the application."""

    def attributes(self) -> Iterable[Pair]:
        """The attributes to record when the stream ends."""


def stream_outcome_for(exc: BaseException) -> StreamOutcome:
    """A cancelled task or a closed generator stops reading a stream: early, not an error."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return StreamOutcome.CLOSED_EARLY
    return StreamOutcome.ERROR


class StreamWatch:
    """The streams the instrumentors return within one unit of work, such as a web request.

    ``context = watch.install(context)``; when the reader of those streams goes away (a web
    client disconnects), :meth:`reader_gone` says so: from then on a watched stream that is
    garbage-collected unfinished ends as closed early (with the partial reply and the given
    attributes) rather than abandoned, and :meth:`close_open` ends the ones still open. The
    streams themselves are left to their owner.
    """

    __slots__ = ("_streams", "stop_attributes")

    def __init__(self) -> None:
        # Held until their spans have ended: a stream the garbage collector is ending in another
        # thread must still be found (a weak set has forgotten it by then).
        self._streams: set[CallFinish] = set()
        self.stop_attributes: dict[str, Any] | None = None

    def install(self, context: Context) -> Context:
        return context_api.set_value(_WATCHED_STREAMS_KEY, self, context)

    def add(self, finish: CallFinish) -> None:
        """Watch ``finish``'s stream. A stream leaves the watch when its :class:`CallFinish` ends
        it; one ended another way is dropped here, so a long-lived watch (a WebSocket's) stays
        as small as its open streams."""
        streams = self._streams
        if len(streams) >= _PRUNE_AT:
            for watched in list(streams):
                if watched.call.settled:
                    streams.discard(watched)
        streams.add(finish)

    def reader_gone(self, attributes: Mapping[str, Any]) -> None:
        self.stop_attributes = dict(attributes)

    def close_open(self) -> int:
        """End the still-open watched streams as closed early; returns how many ended.

        When it returns, every watched stream's span has ended, the ones another thread was
        ending at that moment included (the garbage collector runs a lost stream's finalizer in
        whichever thread it happens to run; waited for up to a second): the caller's own span,
        such as a request's root, ends after them and so gets their turn's text.
        """
        attributes = self.stop_attributes or {}
        ended = 0
        unsettled = []
        for finish in list(self._streams):
            call = finish.call
            if not call.ended:
                finish.stop(attributes)
                ended += 1
            if not call.settled:
                unsettled.append(call)
        if unsettled:
            _wait_settled(unsettled)
        return ended


def _wait_settled(calls: list[CallSpan]) -> None:
    """Wait (briefly) until other threads have finished ending ``calls``' spans."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while not all(call.settled for call in calls):
        if time.monotonic() > deadline:
            log_once(
                "waiting for a stream's span to end",
                message=f"a watched stream was still ending after {_SETTLE_TIMEOUT_S} s; "
                "not waiting longer",
            )
            return
        time.sleep(0.0005)


class _NoAccumulator:
    __slots__ = ()

    def process(self, chunk: Any) -> None:
        return None

    def attributes(self) -> Iterable[Pair]:
        return ()


_NONE = _NoAccumulator()


class CallFinish:
    """Ends one call's span exactly once, whichever way the call (or its stream) ends.

    A call that returns a stream becomes a stream (:meth:`watch_stream`, implied by giving an
    ``accumulator``); its chunks go through :meth:`deliver` (or :meth:`first_token`).
    """

    __slots__ = ("__weakref__", "accumulator", "call", "exhausted", "started", "watch")

    def __init__(self, call: CallSpan, accumulator: StreamAccumulator | None = None) -> None:
        self.call = call
        self.accumulator: StreamAccumulator = accumulator if accumulator is not None else _NONE
        self.started = False
        self.exhausted = False
        self.watch: StreamWatch | None = None
        watch_collections()  # a stream may be collected: its end must run outside that
        if accumulator is not None:
            self.watch_stream()

    def watch_stream(self) -> None:
        """The call returned a stream: a :class:`StreamWatch` of the context now follows it."""
        watch = context_api.get_value(_WATCHED_STREAMS_KEY)
        if isinstance(watch, StreamWatch) and self.watch is None:
            self.watch = watch
            watch.add(self)

    # --- what happens while a stream is read ---

    def first_token(self) -> None:
        """A first chunk arrived: record the time to first token (once)."""
        if not self.started:
            self.started = True
            elapsed_ms = (time.monotonic_ns() - self.call.started_ns) / 1e6
            self.call.set(TIME_TO_FIRST_TOKEN_MS, round(elapsed_ms, 3))

    def deliver(self, chunk: Any) -> bool:
        """Feed one chunk to the accumulator; ``False`` means hide it from the application."""
        if not self.started:
            self.first_token()
        try:
            return self.accumulator.process(chunk) is not False
        except Exception as exc:  # noqa: BLE001
            log_once("stream chunk extraction", exc)
            return True

    # --- the ways to end ---

    def returned(self, attributes: Iterable[Pair] = ()) -> None:
        """The call returned a result (not a stream)."""
        self.end(None, attributes=attributes)

    def failed(self, error: BaseException, attributes: Iterable[Pair] = ()) -> None:
        """The call raised ``error`` before returning."""
        self.end(None, error, attributes)

    def completed(self, attributes: Iterable[Pair] = ()) -> None:
        """The stream was read to its end."""
        self.exhausted = True
        self.end(StreamOutcome.COMPLETED, attributes=attributes)

    def raised(self, error: BaseException, attributes: Iterable[Pair] = ()) -> None:
        """Reading the stream raised ``error`` (see :func:`stream_outcome_for`)."""
        outcome = stream_outcome_for(error)
        self.end(outcome, error if outcome is StreamOutcome.ERROR else None, attributes)

    def closed(self) -> None:
        """The stream was closed or its ``with`` block exited."""
        self.end(StreamOutcome.COMPLETED if self.exhausted else StreamOutcome.CLOSED_EARLY)

    def stop(self, attributes: Mapping[str, Any]) -> None:
        """The stream's reader went away: closed early, recording ``attributes``."""
        self.end(StreamOutcome.CLOSED_EARLY, attributes=attributes.items())

    def collected(self) -> None:
        """The stream was garbage-collected: abandoned, unless its reader went away. Called from
        a finalizer: a collection's ends run once it is over (:mod:`convotel.collected_ends`)."""
        if not self.call.ended:
            end_outside_collection(self._end_collected)

    def _end_collected(self) -> None:
        if self.call.ended:
            return
        stopped = self.watch.stop_attributes if self.watch is not None else None
        if stopped is not None:  # its reader went away (a web client disconnected)
            self.stop(stopped)
        else:
            self.end(StreamOutcome.ABANDONED)

    def end(
        self,
        outcome: StreamOutcome | None,
        error: BaseException | None = None,
        attributes: Iterable[Pair] = (),
    ) -> None:
        """End the span with ``outcome`` (``None``: not a stream) by :func:`end_call`'s rule."""
        accumulator = self.accumulator
        end_call(
            self.call, outcome, error, attributes, None if accumulator is _NONE else accumulator
        )
        watch = self.watch
        if watch is not None and self.call.settled:
            watch._streams.discard(self)


def end_call(
    call: CallSpan,
    outcome: StreamOutcome | None = None,
    error: BaseException | None = None,
    attributes: Iterable[Pair] = (),
    accumulator: StreamAccumulator | None = None,
) -> None:
    """End ``call``'s span once: the rule of this module's table, written in this one place.

    ``outcome`` is ``None`` for a call that did not return a stream (a returned call needs no
    :class:`CallFinish`: the core's wrappers end it here directly).
    """
    if not call.claim_end():  # claimed before the stream is read: one thread reads it
        return
    ok = True
    try:
        reported = None
        if outcome is not None:
            if error is None and accumulator is not None:
                reported = _reported_error(accumulator)
                if reported is not None:
                    outcome = StreamOutcome.ERROR
            call.set(STREAM_OUTCOME, outcome.value)
            if accumulator is not None:
                call.record(accumulator.attributes, "stream attributes")
        if reported is not None:
            call.record_failure(reported.type, reported.description)
        ok = outcome is not StreamOutcome.ABANDONED and outcome is not StreamOutcome.ERROR
    finally:
        call.end_claimed(error, attributes, ok=ok)


def _reported_error(accumulator: StreamAccumulator) -> StreamError | None:
    """The failure the accumulator saw in the stream, if it reports one."""
    try:
        report = getattr(accumulator, "error", None)
        reported = report() if callable(report) else None
    except Exception as exc:  # noqa: BLE001
        log_once("stream error report", exc)
        return None
    return reported if isinstance(reported, StreamError) else None
