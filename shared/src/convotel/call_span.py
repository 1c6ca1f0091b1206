"""The one way convotel opens, fills and ends a span, for every adapter.

* :class:`Tracing` starts spans of an OpenInference kind carrying the context's session, user,
  metadata, tags and prompt-template attributes.
* :class:`CallSpan` sets attributes safely (``None`` dropped, dicts JSON-encoded, masked by the
  :class:`~convotel.config.TraceConfig`, never raises), records exceptions and ends exactly once.
  How it ends (status, stream outcome) is decided by :class:`~convotel.finish.CallFinish`.
* :func:`inside_call` answers "is this code running inside one of convotel's calls?".

Guarding happens here, at the boundary with the user's call path: errors in convotel's own code are
logged once per place and swallowed; the user's exceptions pass through as the same object.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from convotel.attributes import Pair
from convotel.config import TraceConfig
from convotel.context import CONTEXT_ATTRIBUTES, context_attributes
from convotel.cost import cost_attributes
from convotel.genai import genai_attributes
from convotel.json_encoding import safe_json_dumps, valid_unicode
from convotel.provider_sessions import SESSION_SOURCE, session_source

__all__ = [
    "DEFERRED_TO_PROVIDER",
    "CallSpan",
    "Pair",
    "SpanKindValue",
    "Tracing",
    "inside_call",
    "log_once",
]

logger = logging.getLogger("convotel")

SpanKindValue = OpenInferenceSpanKindValues | str

#: Set on a framework LLM span whose tokens were recorded by a provider span below it.
DEFERRED_TO_PROVIDER = "convotel.llm.deferred_to_provider"

_KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
_LLM = OpenInferenceSpanKindValues.LLM.value
_EMBEDDING = OpenInferenceSpanKindValues.EMBEDDING.value
_CHAIN = OpenInferenceSpanKindValues.CHAIN.value
_KIND_VALUES: dict[object, str] = {kind: kind.value for kind in OpenInferenceSpanKindValues}
_TOKEN_COUNT_PREFIX = "llm.token_count"
_PROMPT_TOKENS = SpanAttributes.LLM_TOKEN_COUNT_PROMPT
_PROVIDER, _SYSTEM = SpanAttributes.LLM_PROVIDER, SpanAttributes.LLM_SYSTEM
_MODEL = SpanAttributes.LLM_MODEL_NAME
_OK = Status(StatusCode.OK)
_CONTEXT_KEYS = frozenset(CONTEXT_ATTRIBUTES)
_SESSION = SpanAttributes.SESSION_ID
_CLAIM_KEY = context_api.create_key("convotel-model-call-claim")
_RUNNING_CALL_KEY = context_api.create_key("convotel-running-call")
#: The key OpenTelemetry keeps the current span under (what ``set_span_in_context`` sets), so a
#: call's context is built in one copy; ``None`` if the API ever stops having it.
_SPAN_KEY: str | None = getattr(trace_api.propagation, "_SPAN_KEY", None)
_EMPTY_CONTEXT = Context()
_PLAIN_TYPES = (str, bool, int, float)
_PLAIN_TYPE_SET = frozenset(_PLAIN_TYPES)
_NUMBER_TYPE_SET = frozenset((int, float))
#: OTLP carries integers as int64; larger ones are recorded as their JSON text.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: At most this many keys in a fast-path cache (then it starts over).
_MAX_UNCHANGED_KEYS = 4096

_logged: set[str] = set()


def log_once(where: str, exc: BaseException | None = None, *, message: str | None = None) -> None:
    """Log a failure of convotel's own code once per place (``where``), never raising.

    The warning says "``where`` failed; instrumentation continues", with ``exc``'s traceback;
    ``message`` says something else in its place (e.g. what a server answered)."""
    if where in _logged:
        return
    _logged.add(where)
    if message is None:
        logger.warning("convotel: %s failed; instrumentation continues", where, exc_info=exc)
    else:
        logger.warning("convotel: %s", message, exc_info=exc)


def _attribute_value(value: Any) -> AttributeValue | None:
    """Coerce ``value`` to something OpenTelemetry accepts; dicts and objects become JSON."""
    if isinstance(value, _PLAIN_TYPES):
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            return safe_json_dumps(value)
        return value
    if value is None:
        return None
    if isinstance(value, Enum):
        return _attribute_value(value.value)
    if isinstance(value, (list, tuple)):
        item_types = set(map(type, value))  # one pass in C: vectors are thousands of floats
        if int in item_types and any(
            type(item) is int and not _INT64_MIN <= item <= _INT64_MAX for item in value
        ):
            return safe_json_dumps(value)
        if len(item_types) == 1 and item_types <= _PLAIN_TYPE_SET:
            return value if type(value) is list else list(value)
        if item_types <= _NUMBER_TYPE_SET:
            return [float(item) for item in value]  # sequences must be of one type
        if all(isinstance(item, str) for item in value):  # str subclasses, e.g. str enums
            return [str.__str__(item) for item in value]  # the text, not an enum's name
        return safe_json_dumps(value)
    return safe_json_dumps(value)


def _encodable(value: AttributeValue | None) -> AttributeValue | None:
    """``value`` with its text made valid Unicode: OTLP cannot encode a lone surrogate (e.g. a
    reply cut inside an emoji) and its exporter would drop the attribute."""
    if isinstance(value, str):
        return value if value.isascii() else valid_unicode(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [item if item.isascii() else valid_unicode(item) for item in value]
    return value


class _ModelCallClaim:
    """Lets a provider span tell the framework LLM span above it that it recorded the call."""

    __slots__ = ("provider_seen",)

    def __init__(self) -> None:
        self.provider_seen = False


class CallSpan:
    """A span being filled for one call; every method is safe to call from the user's call path.

    ``unchanged_keys`` is the fast path's cache: keys whose plain values are recorded as they are
    (the config said so through :meth:`TraceConfig.keeps_unchanged`); :class:`Tracing` shares one
    per instrumentor.
    """

    __slots__ = (
        *("__weakref__", "_claim", "_config", "_ended", "_pending", "_settled", "_unchanged"),
        "started_ns",
        "llm",
        *("context", "enclosing", "owner", "span", "tracing"),
    )

    def __init__(
        self,
        span: Span,
        context: Context,
        config: TraceConfig,
        claim: _ModelCallClaim | None = None,
        unchanged_keys: set[str] | None = None,
    ) -> None:
        self.span = span
        #: The context with this span current (and the model-call claim, for framework spans).
        self.context = context
        self._config = config
        self._claim = claim
        #: Started as an LLM span (what is priced when it ends; set by :class:`Tracing`).
        self.llm = False
        self._unchanged = unchanged_keys if unchanged_keys is not None else set()
        self._pending: dict[str, AttributeValue] = {}
        self._ended = False
        self._settled = False
        #: ``time.monotonic_ns()`` when the call started (time to first token counts from it).
        self.started_ns = time.monotonic_ns()
        #: What the call was started for, if it is findable with :func:`inside_call`.
        self.owner: object | None = None
        #: The :class:`Tracing` that started it, if it is findable.
        self.tracing: Tracing | None = None
        #: The findable call this one runs inside, if any.
        self.enclosing: CallSpan | None = None

    @property
    def ended(self) -> bool:
        """The span's end has begun (the call is claimed: later ends do nothing)."""
        return self._ended

    @property
    def settled(self) -> bool:
        """The span has ended and every span processor has seen it end."""
        return self._settled

    def set(self, key: str, value: Any) -> None:
        """Record one attribute (applied when the span ends); ``None`` is ignored."""
        self.set_attributes(((key, value),), "recording an attribute")

    def set_attributes(self, pairs: Iterable[Pair], where: str = "attribute extraction") -> None:
        """Record the pairs an extractor yields; an extractor that raises is logged once."""
        pending, unchanged = self._pending, self._unchanged
        try:
            for key, value in pairs:
                # The hot path: a plain value under a key the config keeps as it is.
                kind = type(value)
                if kind is str:
                    if key in unchanged:  # isascii is O(1) (a flag in CPython)
                        pending[key] = value if value.isascii() else valid_unicode(value)
                        continue
                elif kind is int:
                    if key in unchanged and _INT64_MIN <= value <= _INT64_MAX:
                        pending[key] = value
                        continue
                elif value is None:
                    continue
                elif (kind is float or kind is bool) and key in unchanged:
                    pending[key] = value
                    continue
                self._record_converted(key, value)
        except Exception as exc:  # noqa: BLE001 - extraction must never reach the caller
            log_once(where, exc)

    def record(self, produce: Callable[[], Iterable[Pair]], where: str) -> None:
        """Record what ``produce`` yields; an extractor failing when called or iterated is
        logged once."""
        try:
            self.set_attributes(produce(), where)
        except Exception as exc:  # noqa: BLE001
            log_once(where, exc)

    def _record_converted(self, key: str, value: Any) -> None:
        """Record a value that needs converting (JSON, sequences) or masking; never ``None``."""
        config = self._config
        if key not in self._unchanged and config.keeps_unchanged(key):
            if len(self._unchanged) >= _MAX_UNCHANGED_KEYS:
                self._unchanged.clear()
            self._unchanged.add(key)  # its next plain values take the fast path
        coerced = _encodable(_attribute_value(value))  # before masking: JSON is truncated too
        if coerced is None:
            return
        masked = config.mask(key, coerced)
        if masked is not None:
            self._pending[key] = masked

    def record_failure(self, error_type: str, description: str) -> None:
        """Mark the span as failed without an exception (e.g. an error reported in a stream)."""
        try:
            self._pending[ERROR_TYPE] = error_type
            self.span.set_status(Status(StatusCode.ERROR, description))
        except Exception as exc:  # noqa: BLE001
            log_once("recording a failure", exc)

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc`` (status ERROR, exception event, HTTP status)."""
        try:  # the status first: the exception event below needs str(exc), which may fail
            self._pending[ERROR_TYPE] = type(exc).__qualname__
            self.span.set_status(
                Status(StatusCode.ERROR, f"{type(exc).__name__}: {_describe(exc)}")
            )
            status_code = _http_status(exc)
            if status_code is not None:
                self._pending[HTTP_RESPONSE_STATUS_CODE] = status_code
            self.span.record_exception(exc)
        except Exception as inner:  # noqa: BLE001
            log_once("recording an exception", inner)

    def end(
        self,
        error: BaseException | None = None,
        attributes: Iterable[Pair] = (),
        *,
        ok: bool = True,
    ) -> None:
        """End the span once, recording ``attributes`` and ``error``; later calls do nothing.

        Without an error the status is OK, or left unset with ``ok=False`` (e.g. an abandoned
        stream: neither a success nor a failure).
        """
        if self.claim_end():
            self.end_claimed(error, attributes, ok=ok)

    def claim_end(self) -> bool:
        """Claim the span's end: ``True`` for the first caller only, which must then call
        :meth:`end_claimed` (check and set run without a call between them, so two threads
        ending the same span at once cannot both win under the GIL)."""
        if self._ended:
            return False
        self._ended = True
        return True

    def end_claimed(
        self,
        error: BaseException | None = None,
        attributes: Iterable[Pair] = (),
        *,
        ok: bool = True,
    ) -> None:
        """End the span whose end this caller claimed (see :meth:`end`)."""
        try:
            self.set_attributes(attributes)
            if error is not None:
                self.record_exception(error)
            elif ok:
                self.span.set_status(_OK)
            pending = self._pending
            if self._claim is not None and self._claim.provider_seen:
                pending = {
                    k: v for k, v in pending.items() if not k.startswith(_TOKEN_COUNT_PREFIX)
                }
                pending[DEFERRED_TO_PROVIDER] = True
                if self.span.is_recording() and _span_kind(self.span) in (_LLM, _EMBEDDING):
                    pending[_KIND] = _CHAIN
            elif self.llm and self._config.record_cost and _PROMPT_TOKENS in pending:
                pending.update(_cost_pairs(self.span, pending, self._config.max_value_length))
            if self._config.enable_genai_semconv:
                pending = {**pending, **_genai_pairs(self.span, pending)}
            if pending:
                self.span.set_attributes(pending)
            self.span.end()
        except Exception as exc:  # noqa: BLE001
            log_once("ending a span", exc)
        finally:
            self._settled = True


def _genai_pairs(span: Span, pending: Mapping[str, Any]) -> dict[str, Any]:
    recorded = getattr(span, "attributes", None)
    combined = {**recorded, **pending} if isinstance(recorded, Mapping) else dict(pending)
    return dict(genai_attributes(combined))


def _cost_pairs(span: Span, pending: Mapping[str, Any], cut_at: int | None) -> dict[str, Any]:
    """The cost of an LLM span's call (see :mod:`convotel.cost`); a deferred one has none."""
    try:
        # The span's own attributes are read only when the pending ones lack provider or model
        # (reading them copies them).
        has_names = (pending.get(_PROVIDER) or pending.get(_SYSTEM)) and pending.get(_MODEL)
        recorded = None if has_names else getattr(span, "attributes", None)
        return cost_attributes(pending, recorded, truncated_at=cut_at)
    except Exception as exc:  # noqa: BLE001 - a price that cannot be computed is not recorded
        log_once("pricing a call", exc)
        return {}


def _span_kind(span: Span) -> object:
    attributes = getattr(span, "attributes", None)
    return attributes.get(_KIND) if isinstance(attributes, Mapping) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose message cannot be printed
        return "<unprintable message>"


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    valid = isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599
    return status if valid else None


class Tracing:
    """Starts :class:`CallSpan`s for one instrumentor (its tracer and trace configuration)."""

    __slots__ = ("config", "tracer", "unchanged_keys")

    def __init__(self, tracer: trace_api.Tracer, config: TraceConfig | None = None) -> None:
        self.tracer = tracer
        self.config = config if config is not None else TraceConfig()
        #: The fast path's cache shared by this instrumentor's spans (see :class:`CallSpan`).
        self.unchanged_keys: set[str] = set()

    def start(
        self,
        name: str,
        kind: SpanKindValue,
        attributes: Iterable[Pair] = (),
        *,
        framework: bool = False,
        parent: Context | None = None,
        owner: object | None = None,
    ) -> CallSpan:
        """Start a span with the context's session/user/... attributes plus ``attributes``.

        ``framework=True`` marks an LLM or EMBEDDING span of a framework adapter (LlamaIndex,
        DSPy): if a provider adapter (OpenAI, Mistral) records the model call below it, this span
        drops its token counts and becomes CHAIN, so one model call is one LLM (or EMBEDDING)
        span and a session's tokens are counted once. With an ``owner``, the call is findable
        with :func:`inside_call` (``owner`` or this ``Tracing``) while it runs.
        """
        ctx = parent if parent is not None else context_api.get_current()
        kind_value = _KIND_VALUES.get(kind) or (kind.value if isinstance(kind, Enum) else kind)
        initial: dict[str, AttributeValue] = {_KIND: kind_value}
        if not _CONTEXT_KEYS.isdisjoint(ctx):  # cheaper than seven lookups when none is set
            initial.update(context_attributes(ctx))
            if _SESSION in initial:  # where the session came from (convotel.provider_sessions)
                initial[SESSION_SOURCE] = session_source(ctx) or "context"
        claim = None
        if kind_value in (_LLM, _EMBEDDING):
            if framework:
                claim = _ModelCallClaim()
            else:
                outer_claim = ctx.get(_CLAIM_KEY)
                if isinstance(outer_claim, _ModelCallClaim):
                    outer_claim.provider_seen = True
        span = self.tracer.start_span(name, context=ctx, attributes=initial)
        if _SPAN_KEY is None:  # an OpenTelemetry API without the key: its public functions
            values: dict[str, object] = dict(trace_api.set_span_in_context(span, ctx))
        else:  # the call's context in one copy (not one per value, as set_value does)
            values = ctx.copy()
            values[_SPAN_KEY] = span
        if claim is not None:
            values[_CLAIM_KEY] = claim
        call = CallSpan(span, _EMPTY_CONTEXT, self.config, claim, self.unchanged_keys)
        call.llm = kind_value == _LLM
        if owner is not None:
            call.owner, call.tracing, call.enclosing = owner, self, _innermost_call(ctx)
            # A weak reference: the call's own context must not keep the call alive (no cycle).
            values[_RUNNING_CALL_KEY] = weakref.ref(call)
        call.context = Context(values)
        if attributes != ():
            call.set_attributes(attributes)
        return call


def _innermost_call(context: Context | None) -> CallSpan | None:
    found = (context if context is not None else context_api.get_current()).get(_RUNNING_CALL_KEY)
    return found() if isinstance(found, weakref.ref) else None


def inside_call(owner: object | None = None, context: Context | None = None) -> CallSpan | None:
    """The innermost running (not ended) findable convotel call in ``context`` (default: the
    current one), if any; with ``owner``, the innermost one started for ``owner`` or by the
    :class:`Tracing` ``owner``.

    The one answer to "is this code running inside one of convotel's calls?": code that runs
    inside a traced call (a usage hook, an SDK's own telemetry hook, a framework calling itself)
    adds to that call's span or keeps from tracing the call twice.
    """
    call = _innermost_call(context)
    while call is not None:
        if not call.ended and (owner is None or owner is call.owner or owner is call.tracing):
            return call
        call = call.enclosing
    return None
