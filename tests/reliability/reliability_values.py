"""Hypothesis strategies for hostile values, and checks of what convotel hands to OpenTelemetry.

* :func:`odd_values` builds nested dicts, lists, tuples and objects (attribute bags, pydantic
  models with missing fields, objects whose ``__str__``/``__repr__``/``__iter__``/``__getattr__``
  raise) over leaves of odd types (``None``, bytes, ``nan``/``inf``, huge ints, enums...), with
  keys biased towards the field names SDK payloads use, so extractors reach their deep paths.
* :class:`RecordingTracer` wraps a real SDK tracer and keeps every raw attribute value convotel
  passes to a span (the SDK silently drops invalid ones, which would hide the problem).
* :func:`invalid_attributes` names the values OpenTelemetry (OTLP) cannot carry.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

import pydantic
from hypothesis import strategies as st
from opentelemetry import trace as trace_api

import convotel.spans
from convotel.spans import ObjectProxy

#: Field names of the SDK payloads and request arguments convotel reads.
FIELD_NAMES = (
    *("model", "messages", "role", "content", "type", "text", "image_url", "url", "refusal"),
    *("tool_calls", "function", "name", "arguments", "id", "call_id", "tool_call_id", "custom"),
    *("choices", "message", "delta", "usage", "finish_reason", "index", "data", "embedding"),
    *("prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens"),
    *("prompt_tokens_details", "completion_tokens_details", "cached_tokens", "reasoning_tokens"),
    *("input", "inputs", "instructions", "prompt", "suffix", "tools", "stream", "output"),
    *("status", "incomplete_details", "reason", "response", "results", "outputs", "entries"),
    *("conversation_id", "agent_id", "temperature", "max_tokens", "stream_options", "metadata"),
    *("signature", "predict", "kwargs", "desc", "args", "passages", "scores", "indices"),
    *("score", "devset", "metric", "program", "top_n", "model_name", "additional_kwargs"),
    *("raw", "query_str", "user_msg", "query", "messages", "cache_hit", "response_model"),
    *("api_key", "extra_headers", "headers", "http_headers", "timeout", "tool_choice"),
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class HugeInt(int):
    """An int too large to print (Python refuses ``str()`` beyond 4,300 digits); Hypothesis's
    reports show its size instead."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"HugeInt(<{self.bit_length()} bits>)")


class Colour(enum.Enum):
    RED = "red"
    NESTED = ("a", 1.5)


class Unprintable:
    """``str()``/``repr()``/``format()`` raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        raise RuntimeError("no format")


class Uniterable:
    """Looks like a container (``__iter__``, ``__len__``, ``__getitem__``) but every use raises."""

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("no item")

    def __bool__(self) -> bool:
        raise RuntimeError("no truth")


class Hostile:
    """Every attribute access (even ``__dict__``) raises something other than AttributeError."""

    def __getattribute__(self, name: str) -> Any:
        if name == "__class__":
            return Hostile
        raise RuntimeError(f"no attribute {name}")


class BrokenMapping(Mapping[str, Any]):
    """A mapping whose keys can be listed but whose values raise."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no value")

    def __iter__(self) -> Iterator[str]:
        return iter(("model", "content", "usage"))

    def __len__(self) -> int:
        return 3


class Payload(pydantic.BaseModel):
    """A pydantic model built without validation: declared fields may be missing."""

    model: str
    content: str
    usage: dict[str, int]


class BrokenDump(pydantic.BaseModel):
    """A pydantic model whose ``model_dump`` raises."""

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("no dump")

    def __str__(self) -> str:
        raise RuntimeError("no str")


class StatusError(Exception):
    """An exception carrying an odd ``status_code``/``response`` (as SDK errors do)."""

    def __init__(self, status_code: Any = None, response: Any = None) -> None:
        super().__init__("status error")
        self.status_code = status_code
        self.response = response


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def hostile_objects() -> st.SearchStrategy[Any]:
    """One of the objects above whose every use (printing, iterating, reading) fails."""
    return st.sampled_from(
        [Unprintable, Uniterable, Hostile, BrokenMapping, BrokenDump, Colour.RED, Colour.NESTED]
    ).map(lambda make: make() if isinstance(make, type) else make)


def _missing_field_models() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries(
        {}, optional={"model": st.text(max_size=5), "content": st.none() | st.integers()}
    )
    return fields.map(lambda values: Payload.model_construct(**cast(Any, values)))


LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([63, 64, 1400, 17000]).map(lambda bits: HugeInt(2**bits)),
    st.just(-(2**63) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(FIELD_NAMES),
    st.binary(max_size=6),
    hostile_objects(),
    _missing_field_models(),
    st.sampled_from([int, Payload, Hostile]),  # classes, e.g. a ``response_format`` model
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
    mappings = st.dictionaries(keys, children, max_size=4)
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        mappings,
        mappings.map(lambda values: SimpleNamespace(**values)),
        st.dictionaries(st.integers() | st.none() | st.tuples(st.integers()), children, max_size=2),
    )


def odd_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Nested hostile values (see the module docstring)."""
    return st.recursive(LEAVES, _containers, max_leaves=max_leaves)


def odd_mappings(max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments: str keys (mostly known parameter names), hostile values."""
    keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
    return st.dictionaries(keys, odd_values(max_leaves), max_size=6)


def odd_objects_with_fields(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """What an SDK hands back: attribute bags, dicts, or any hostile value."""
    fields = odd_mappings(max_leaves)
    return st.one_of(
        fields.map(lambda values: SimpleNamespace(**values)),
        fields,
        hostile_objects(),
        odd_values(),
    )


def odd_exceptions() -> st.SearchStrategy[BaseException]:
    """Exceptions as SDKs raise them, with odd status codes, responses and messages."""
    return st.one_of(
        st.builds(StatusError, odd_values(4), odd_values(4)),
        st.builds(UnprintableError),
        st.builds(ValueError, st.text(max_size=8)),
        st.builds(KeyboardInterrupt),
    )


# --- what reaches the OpenTelemetry span -------------------------------------------------


def _invalid_scalar(value: object) -> bool:
    if isinstance(value, bool | str):
        return False
    if isinstance(value, int):
        return not INT64_MIN <= value <= INT64_MAX
    return not isinstance(value, float)


def invalid_attributes(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """The pairs whose value is not an OTLP attribute value: a str, bool, int64 or float, or a
    sequence of one of those types."""
    invalid = []
    for key, value in pairs:
        if not isinstance(key, str) or not key:
            invalid.append(f"key {key!r}")
        elif isinstance(value, list | tuple):
            kinds = {type(item) for item in value}
            if len(kinds) > 1 or any(_invalid_scalar(item) for item in value):
                invalid.append(f"{key}={value!r}")
        elif _invalid_scalar(value):
            invalid.append(f"{key}={type(value).__name__}")
    return invalid


class RecordingSpan(ObjectProxy):
    """A real SDK span that also keeps the raw values it is given."""

    def __init__(self, span: Any, recorded: list[tuple[str, Any]]) -> None:
        super().__init__(span)
        self._self_recorded = recorded

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._self_recorded.extend(attributes.items())
        self.__wrapped__.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._self_recorded.append((key, value))
        self.__wrapped__.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
        self._self_recorded.extend((attributes or {}).items())
        self.__wrapped__.add_event(name, attributes, timestamp)


class RecordingTracer:
    """A tracer whose spans record every raw attribute value (see :func:`invalid_attributes`)."""

    def __init__(self, tracer: trace_api.Tracer) -> None:
        self.tracer = tracer
        self.recorded: list[tuple[str, Any]] = []

    def start_span(
        self, name: str, context: Any = None, attributes: Any = None, **kwargs: Any
    ) -> Any:
        self.recorded.extend((attributes or {}).items())
        span = self.tracer.start_span(name, context=context, attributes=attributes, **kwargs)
        return RecordingSpan(span, self.recorded)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def convotel_failures() -> Iterator[list[logging.LogRecord]]:
    """The warnings convotel logs (``log_once``: one per failing place) while the block runs;
    places that failed before are forgotten first, so each block sees its own failures."""
    convotel.spans._logged.clear()
    handler = _Records()
    logger = logging.getLogger("convotel")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
