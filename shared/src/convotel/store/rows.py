"""A finished span as a store row and back; text made storable."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from convotel.json_encoding import valid_unicode
from convotel.sessions import SpanEvent, SpanRecord

logger = logging.getLogger(__name__)

# surrogate), an integer beyond 64 bits, a value over SQLite's size limit.
_UNSTORABLE = (UnicodeEncodeError, OverflowError, sqlite3.DataError)
# A JSON escape of a UTF-16 surrogate (text written by another program may hold lone ones).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "span_kind",
    "start_time_ns",
    "end_time_ns",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "resource_attributes",
    "scope_name",
    "session_id",
    "user_id",
)
_INSERT_SQL = (
    f"INSERT OR IGNORE INTO spans ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT_SQL = f"SELECT {', '.join(_COLUMNS)} FROM spans"

SpanRow = tuple[Any, ...]


def _jsonable(value: object) -> object:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(item) for item in value]
    return str(value)


def _dumps(value: object) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _storable(row: SpanRow) -> SpanRow:
    """``row`` with every text column made valid UTF-8 (see :func:`_valid_text`)."""
    return tuple(valid_unicode(value) if isinstance(value, str) else value for value in row)


def _valid_strings(value: Any) -> Any:
    """Loaded JSON with every string made valid Unicode."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, list):
        return [_valid_strings(item) for item in value]
    if isinstance(value, dict):
        return {valid_unicode(key): _valid_strings(item) for key, item in value.items()}
    return value


def _loads(text: str) -> Any:
    """A JSON column; lone surrogates escaped in it (by another writer) come back as U+FFFD."""
    loaded = json.loads(text)
    return _valid_strings(loaded) if _SURROGATE_ESCAPE.search(text) else loaded


def _attributes_from_json(text: str) -> dict[str, AttributeValue]:
    loaded = _loads(text)
    if not isinstance(loaded, dict):
        return {}
    return {str(key): _tuples(value) for key, value in loaded.items()}


def _tuples(value: Any) -> Any:
    """JSON arrays back to tuples, as the OpenTelemetry SDK hands out sequence attributes."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def span_row(span: ReadableSpan) -> SpanRow:
    """The store row for one finished span."""
    record = SpanRecord.from_readable_span(span)
    events = [
        {"name": event.name, "time_ns": event.time_ns, "attributes": event.attributes}
        for event in record.events
    ]
    scope = span.instrumentation_scope
    return (
        record.trace_id,
        record.span_id,
        record.parent_id,
        record.name,
        record.kind,
        record.span_kind,
        record.start_ns,
        record.end_ns,
        record.status_code,
        record.status_message,
        _dumps(record.attributes),
        _dumps(events),
        _dumps(record.resource_attributes),
        scope.name if scope is not None else None,
        record.session_id,
        record.user_id,
    )


def record_from_row(row: Sequence[Any]) -> SpanRecord:
    """Turn a row selected with the store's column order back into a :class:`SpanRecord`."""
    values = dict(zip(_COLUMNS, row, strict=True))
    events = tuple(
        SpanEvent(
            name=str(event.get("name", "")),
            time_ns=int(event.get("time_ns", 0)),
            attributes={
                str(key): _tuples(value) for key, value in (event.get("attributes") or {}).items()
            },
        )
        for event in _loads(values["events"])
        if isinstance(event, dict)
    )
    return SpanRecord(
        trace_id=values["trace_id"],
        span_id=values["span_id"],
        parent_id=values["parent_span_id"],
        name=values["name"],
        start_ns=values["start_time_ns"],
        end_ns=values["end_time_ns"],
        status_code=values["status_code"],
        status_message=values["status_message"],
        kind=values["kind"],
        attributes=_attributes_from_json(values["attributes"]),
        events=events,
        resource_attributes=_attributes_from_json(values["resource_attributes"]),
    )
