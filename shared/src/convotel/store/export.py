"""Moving history out: the store's spans sent to any OTLP/HTTP endpoint as they were recorded.

:func:`export_spans` reads the store in rowid order, whole traces at a time as the filters
select them, rebuilds each span as an SDK ``ReadableSpan`` with its original ids, times,
attributes, events, status, resource and instrumentation scope, and hands batches to a span
exporter (``convotel export`` uses OpenTelemetry's OTLP/HTTP exporter). Progress is written after
every accepted batch to a small JSON file beside the store, keyed by the endpoint and the
filters, so an interrupted export resumes where it stopped and a repeated one sends nothing
twice; ``restart=True`` sends everything again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from convotel.sessions import SpanRecord
from convotel.store.reader import SpanStore, _time_ns
from convotel.store.rows import _COLUMNS

logger = logging.getLogger(__name__)

__all__ = ["ExportFailedError", "ExportFilters", "export_spans", "progress_path", "readable_span"]

#: Spans per exported batch (OTLP receivers accept a few MB per request).
DEFAULT_BATCH_SIZE = 256
_SELECT = f"SELECT rowid, {', '.join(_COLUMNS)} FROM spans"


class ExportFailedError(RuntimeError):
    """The endpoint did not accept a batch; what was accepted before it is recorded."""


@dataclass(frozen=True)
class ExportFilters:
    """Which traces to send: those with a span of ``session_id`` / ``user_id``, active since."""

    session_id: str | None = None
    user_id: str | None = None
    since: datetime | None = None

    def where(self) -> tuple[str, list[object]]:
        conditions: list[str] = []
        parameters: list[object] = []
        for column, value in (("session_id", self.session_id), ("user_id", self.user_id)):
            if value is not None:
                conditions.append(f"trace_id IN (SELECT trace_id FROM spans WHERE {column} = ?)")
                parameters.append(value)
        since_ns = _time_ns(self.since)
        if since_ns is not None:
            conditions.append("trace_id IN (SELECT trace_id FROM spans WHERE end_time_ns >= ?)")
            parameters.append(since_ns)
        return " AND ".join(conditions), parameters

    def key(self, endpoint: str) -> str:
        since = self.since.isoformat() if self.since is not None else None
        return json.dumps([endpoint, self.session_id, self.user_id, since])


def progress_path(store: SpanStore) -> Path:
    """The file beside the store recording how far each export got."""
    return Path(f"{store.path}.exports.json")


def _load_progress(path: Path) -> dict[str, int]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): v for k, v in loaded.items() if isinstance(v, int)}


def _save_progress(path: Path, progress: dict[str, int]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(progress, indent=1), encoding="utf-8")
    os.replace(temporary, path)  # atomic: an interrupted write never loses the old progress


def readable_span(record: SpanRecord, scope_name: str | None = None) -> ReadableSpan:
    """``record`` as the SDK span it was (ids, times, attributes, events, status, resource)."""
    context = SpanContext(
        int(record.trace_id, 16),
        int(record.span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = None
    if record.parent_id:
        parent = SpanContext(int(record.trace_id, 16), int(record.parent_id, 16), is_remote=False)
    return ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=Resource(dict(record.resource_attributes)),
        attributes=dict(record.attributes),
        events=[Event(e.name, dict(e.attributes), e.time_ns) for e in record.events],
        kind=SpanKind[record.kind] if record.kind in SpanKind.__members__ else SpanKind.INTERNAL,
        status=Status(
            StatusCode[record.status_code]
            if record.status_code in StatusCode.__members__
            else StatusCode.UNSET,
            record.status_message,
        ),
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=InstrumentationScope(scope_name or "convotel.store"),
    )


def export_spans(
    store: SpanStore,
    exporter: SpanExporter,
    *,
    endpoint: str,
    filters: ExportFilters | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    restart: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send the selected spans not sent to ``endpoint`` yet; returns how many were sent.

    ``progress(sent, total)`` is called after every accepted batch. Raises
    :class:`ExportFailedError` when the exporter refuses a batch (the batches before it stay
    recorded as sent).
    """
    filters = filters or ExportFilters()
    where, parameters = filters.where()
    path, key = progress_path(store), filters.key(endpoint)
    done = _load_progress(path)
    after = 0 if restart else done.get(key, 0)
    condition = f"rowid > ?{' AND ' + where if where else ''}"
    count_sql = f"SELECT COUNT(*) FROM spans WHERE {condition}"
    total = int(store._query(count_sql, [after, *parameters])[0][0])
    sent = 0
    while True:
        rows: Sequence[Any] = store._query(
            f"{_SELECT} WHERE {condition} ORDER BY rowid LIMIT ?", [after, *parameters, batch_size]
        )
        if not rows:
            return sent
        spans = [
            readable_span(store._record(row[1:]), row[_COLUMNS.index("scope_name") + 1])
            for row in rows
        ]
        try:
            accepted = exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception as exc:  # older exporters raise on connection errors
            logger.debug("convotel: exporting a batch raised", exc_info=True)
            accepted, reason = False, f": {type(exc).__name__}"
        else:
            reason = ""
        if not accepted:
            raise ExportFailedError(
                f"{endpoint} did not accept the spans ({sent} of {total} sent; run the same "
                f"command again to resume){reason}"
            )
        after = int(rows[-1][0])
        sent += len(spans)
        done[key] = after
        _save_progress(path, done)
        if progress is not None:
            progress(sent, total)
