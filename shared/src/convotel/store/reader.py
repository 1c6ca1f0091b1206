"""Reading spans and sessions back from a store file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from convotel.json_encoding import valid_unicode
from convotel.sessions import Session, SpanRecord, group_by_session
from convotel.store.errors import _corrupt, _retry_while_locked
from convotel.store.rows import _SELECT_SQL, record_from_row
from convotel.store.schema import open_connection, resolve_store_path

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 400  # ids per `IN (...)` clause
_SESSION_PAGE = 100  # sessions assembled at a time when listing


def _time_ns(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1_000_000) * 1000


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SpanStore:
    """Reads spans and sessions from a store file (migrating an older schema in place)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float = 5.0):
        self.path = resolve_store_path(path)
        self._busy_timeout = busy_timeout
        self._connection = open_connection(self.path, create=False, busy_timeout=busy_timeout)

    def __enter__(self) -> SpanStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        def run() -> list[Any]:
            try:
                return self._connection.execute(sql, parameters).fetchall()
            except UnicodeEncodeError:  # e.g. an id from argv with undecodable bytes
                repaired = [valid_unicode(p) if isinstance(p, str) else p for p in parameters]
                return self._connection.execute(sql, repaired).fetchall()

        return _retry_while_locked(run, self.path, self._busy_timeout)

    def _record(self, row: Sequence[Any]) -> SpanRecord:
        try:
            return record_from_row(row)
        except (ValueError, TypeError, AttributeError) as exc:  # a damaged row
            detail = f"span {row[1]!r} of trace {row[0]!r} cannot be read: {exc}"
            raise _corrupt(self.path, detail) from exc

    def span_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM spans")[0][0])

    def spans(self, trace_ids: Iterable[str] | None = None) -> list[SpanRecord]:
        """All spans, or those of the given traces, in insertion order."""
        if trace_ids is None:
            return [self._record(row) for row in self._query(f"{_SELECT_SQL} ORDER BY rowid")]
        records: list[SpanRecord] = []
        for chunk in _chunks(list(dict.fromkeys(trace_ids)), _QUERY_CHUNK):
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(f"{_SELECT_SQL} WHERE trace_id IN ({marks}) ORDER BY rowid", chunk)
            records.extend(self._record(row) for row in rows)
        return records

    def session_ids(
        self,
        *,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
    ) -> list[str]:
        """Candidate session ids, most recently active first (a fast, indexed superset)."""
        conditions = ["session_id IS NOT NULL"]
        parameters: list[object] = []
        if user_id is not None:
            conditions.append("session_id IN (SELECT session_id FROM spans WHERE user_id = ?)")
            parameters.append(user_id)
        if errors_only:
            conditions.append(
                "session_id IN (SELECT session_id FROM spans WHERE trace_id IN "
                "(SELECT trace_id FROM spans WHERE status_code = 'ERROR'))"
            )
        having: list[str] = []
        if (since_ns := _time_ns(since)) is not None:
            having.append("MAX(end_time_ns) >= ?")
            parameters.append(since_ns)
        if (until_ns := _time_ns(until)) is not None:
            having.append("MIN(start_time_ns) <= ?")
            parameters.append(until_ns)
        sql = (
            f"SELECT session_id FROM spans WHERE {' AND '.join(conditions)} GROUP BY session_id"
            + (f" HAVING {' AND '.join(having)}" if having else "")
            + " ORDER BY MAX(end_time_ns) DESC, session_id"
        )
        return [row[0] for row in self._query(sql, parameters)]

    def _assemble(self, session_ids: Sequence[str]) -> list[Session]:
        """Build the given sessions from every span of every trace that mentions them."""
        trace_ids: list[str] = []
        for chunk in _chunks(session_ids, _QUERY_CHUNK):
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(
                f"SELECT DISTINCT trace_id FROM spans WHERE session_id IN ({marks})", chunk
            )
            trace_ids.extend(row[0] for row in rows)
        wanted = set(session_ids)
        grouping = group_by_session(self.spans(trace_ids))
        return [session for session in grouping.sessions if session.session_id in wanted]

    def session(self, session_id: str) -> Session | None:
        sessions = self._assemble([session_id])
        return sessions[0] if sessions else None

    def sessions(
        self,
        *,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions, most recently active first.

        ``user_id`` matches the session's user (its first ``user.id``); ``since`` keeps sessions
        active at or after it, ``until`` those that started at or before it; ``errors_only`` keeps
        sessions with at least one error.
        """
        since_ns, until_ns = _time_ns(since), _time_ns(until)
        found: list[Session] = []
        candidates = self.session_ids(
            user_id=user_id, since=since, until=until, errors_only=errors_only
        )
        for page in _chunks(candidates, _SESSION_PAGE):
            for session in self._assemble(page):
                if user_id is not None and session.user_id != user_id:
                    continue
                if since_ns is not None and session.last_time_ns < since_ns:
                    continue
                if until_ns is not None and session.first_time_ns > until_ns:
                    continue
                if errors_only and not session.errors:
                    continue
                found.append(session)
            if limit is not None and len(found) >= limit:
                break
        found.sort(key=lambda session: (-session.last_time_ns, session.session_id))
        return found if limit is None else found[:limit]
