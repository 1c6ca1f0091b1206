"""Whole-session sampling: keep or drop every turn of a conversation together.

Trace-id sampling keeps some turns of a conversation and drops others, so sampled sessions are
fragments. :class:`SessionSampler` decides by the **session id** instead:

* A root span started in a session (``session.id`` in its context — set by ``using_session``,
  the web middleware, baggage from the caller — or among its start attributes) is kept when the
  session's bucket is below the ratio's threshold. The bucket is :func:`session_bucket`: the
  first 8 bytes of the SHA-256 digest of the UTF-8 session id, read as a big-endian unsigned
  integer, modulo :data:`BUCKETS` (10,000). A ratio keeps buckets ``0 .. round(ratio * 10000) - 1``:
  one range, the same in every process and service, and reproducible by any tool.
* A root span outside any session is decided by the ``fallback`` sampler (default: trace-id
  ratio sampling at the same ratio).
* A child follows its parent's decision (local or remote), as ``ParentBased`` samplers do.
* Every span it samples in a session carries the bucket as the integer attribute
  :data:`SESSION_SAMPLE_BUCKET` (``convotel.session.sample_bucket``), so a Collector's
  ``tail_sampling`` numeric-attribute policy can keep the same whole sessions downstream.

A head sampler decides when the turn's root span starts, so the session must be known then: put
the session in the request's context before the server span starts (baggage from the caller, or
a session middleware outside the HTTP instrumentation). A root span that starts before the
session is known is decided by the fallback, and the turn's spans follow it.

Install it in code (``TracerProvider(sampler=SessionSampler(0.25))``) or with the standard
environment variables ``OTEL_TRACES_SAMPLER=convotel_session`` and
``OTEL_TRACES_SAMPLER_ARG=0.25``, which OpenTelemetry's configurator (what
``opentelemetry-instrument`` runs) reads through the ``opentelemetry_traces_sampler`` entry point;
a bare ``TracerProvider()`` reads only the SDK's built-in sampler names.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from convotel.call_span import log_once
from convotel.context import SESSION_ID

__all__ = [
    "BUCKETS",
    "SESSION_SAMPLE_BUCKET",
    "SessionSampler",
    "session_bucket",
    "session_sampler",
]

logger = logging.getLogger(__name__)

#: The number of buckets session ids are spread over.
BUCKETS = 10_000
#: The span attribute holding the session's bucket (an int, for numeric tail-sampling policies).
SESSION_SAMPLE_BUCKET = "convotel.session.sample_bucket"


@functools.lru_cache(maxsize=4096)
def session_bucket(session_id: str) -> int:
    """The session's bucket in ``0 .. BUCKETS - 1``: the first 8 bytes of the SHA-256 digest of
    the UTF-8 id, as a big-endian unsigned integer, modulo :data:`BUCKETS`."""
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class SessionSampler(Sampler):
    """Keeps ``ratio`` of the sessions, each with all of its turns (see the module docs)."""

    def __init__(self, ratio: float = 1.0, *, fallback: Sampler | None = None) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ValueError(f"SessionSampler: ratio must be a number from 0 to 1, got {ratio!r}")
        self.ratio = float(ratio)
        #: Buckets below this are kept: ``round(ratio * BUCKETS)``.
        self.threshold = round(self.ratio * BUCKETS)
        self.fallback = fallback if fallback is not None else TraceIdRatioBased(self.ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        try:
            return self._decide(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        except Exception as exc:  # noqa: BLE001 - a sampler runs inside the application's span start
            log_once(
                "the session sampler",
                exc,
                message="the session sampler failed; the fallback sampler decided",
            )
            return self.fallback.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

    def _decide(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None,
        attributes: Attributes,
        links: Sequence[Link] | None,
        trace_state: TraceState | None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        session = _session_of(parent_context, attributes)
        bucket = None if session is None else session_bucket(session)
        if parent.is_valid:  # a child follows its parent, local or remote
            keep = parent.trace_flags.sampled
        elif bucket is None:
            return self.fallback.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        else:
            keep = bucket < self.threshold
        if not keep:
            return SamplingResult(Decision.DROP, None, parent.trace_state)
        # The span's start attributes are what the sampler returns: pass them through.
        recorded = dict(attributes) if attributes else {}
        if bucket is not None:
            recorded[SESSION_SAMPLE_BUCKET] = bucket
        return SamplingResult(Decision.RECORD_AND_SAMPLE, recorded, parent.trace_state)

    def get_description(self) -> str:
        return f"SessionSampler{{ratio={self.ratio}, fallback={self.fallback.get_description()}}}"


def _session_of(parent_context: Context | None, attributes: Attributes) -> str | None:
    """The session id in the span's context, else among its start attributes."""
    ctx = parent_context if parent_context is not None else context_api.get_current()
    session = ctx.get(SESSION_ID)
    if not isinstance(session, str) or not session:
        session = attributes.get(SESSION_ID) if attributes else None
    return session if isinstance(session, str) and session else None


def session_sampler(argument: str | None = None) -> Sampler:
    """The ``convotel_session`` sampler entry point: ``OTEL_TRACES_SAMPLER_ARG`` is the ratio
    (default 1.0); an argument that is not a ratio from 0 to 1 is logged and 1.0 is used."""
    if argument is None or not argument.strip():
        return SessionSampler(1.0)
    try:
        return SessionSampler(float(argument))
    except ValueError:
        logger.warning(
            "convotel: OTEL_TRACES_SAMPLER_ARG=%r is not a ratio from 0 to 1; keeping every "
            "session (ratio 1.0)",
            argument,
        )
        return SessionSampler(1.0)
