"""Python ``logging`` records that carry the session and user ids of the code that logged them.

:class:`SessionLogFilter` reads ``session.id`` and ``user.id`` from the OpenTelemetry context (set
by ``using_session`` / ``using_user``, convotel's or OpenInference's) when a record is handled and
writes them onto the record. It has two spellings, one per kind of handler:

* ``SessionLogFilter()`` sets ``record.session_id`` and ``record.user_id`` for format strings
  (``"%(session_id)s %(user_id)s %(message)s"``) and JSON formatters. Both are always set: outside
  a session they hold ``default`` (``"-"``), so a format string never fails.
* ``SessionLogFilter(otel_names=True)`` sets ``session.id`` and ``user.id`` (the span attribute
  names), and only when the context carries them. OpenTelemetry's ``LoggingHandler`` (the SDK's,
  and ``opentelemetry-instrumentation-logging``'s) exports every non-standard record attribute as a
  log-record attribute, so the exported logs join the session under the same names as its spans,
  with no placeholder or ``None`` values outside a session.

Attach the filter to a handler: a handler's filters see the records of every logger that reaches
it, whereas a logger's filters see only the records logged on that very logger, not those of its
child loggers (standard :mod:`logging` behaviour). With a ``QueueHandler``, attach it to the
``QueueHandler``: the ``QueueListener``'s handlers run on another thread, outside the session.

All handlers of a logger share one record, so a filter's attributes are seen by the handlers that
run after its own: a default filter on a console handler that runs before the OpenTelemetry handler
also puts ``session_id``/``user_id`` into the export. Add the OpenTelemetry handler first (or give
it the only filter) to export just ``session.id``/``user.id``. Values already on a record (e.g.
``extra={"session_id": ...}`` or a filter that ran earlier) are kept.

The filter never drops a record and never raises: if the context cannot be read, the record goes
out as if no session were active.
"""

from __future__ import annotations

import logging

from opentelemetry import context as context_api

from convotel.context import SESSION_ID, USER_ID

__all__ = ["SESSION_FIELD", "USER_FIELD", "SessionLogFilter", "install_session_log_filter"]

#: The record attribute holding the session id for format strings (``%(session_id)s``).
SESSION_FIELD = "session_id"
#: The record attribute holding the user id for format strings (``%(user_id)s``).
USER_FIELD = "user_id"


def _id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class SessionLogFilter(logging.Filter):
    """Adds the current session and user ids to every record; never drops a record or raises.

    ``default`` is what ``session_id``/``user_id`` hold outside a session or user (``None`` for
    JSON formatters that should write ``null``). ``otel_names=True`` sets ``session.id``/``user.id``
    instead, only when present, for OpenTelemetry's ``LoggingHandler`` (see the module docs).
    """

    def __init__(self, *, default: str | None = "-", otel_names: bool = False) -> None:
        super().__init__()
        self.default = default
        self.otel_names = otel_names

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the ids on ``record`` and let it through."""
        session_id = user_id = None
        try:
            current = context_api.get_current()
            session_id = _id_or_none(current.get(SESSION_ID))
            user_id = _id_or_none(current.get(USER_ID))
        except Exception:  # noqa: BLE001 - a broken context must never break logging
            pass
        try:
            fields = record.__dict__
            if self.otel_names:
                if session_id is not None:
                    fields.setdefault(SESSION_ID, session_id)
                if user_id is not None:
                    fields.setdefault(USER_ID, user_id)
            else:
                fields.setdefault(SESSION_FIELD, self.default if session_id is None else session_id)
                fields.setdefault(USER_FIELD, self.default if user_id is None else user_id)
        except Exception:  # noqa: BLE001 - e.g. a record object without a __dict__
            pass
        return True


def _is_opentelemetry_handler(handler: logging.Handler) -> bool:
    """The SDK's and ``opentelemetry-instrumentation-logging``'s ``LoggingHandler``."""
    return type(handler).__module__.startswith("opentelemetry.")


def install_session_log_filter(
    target: logging.Handler | logging.Logger | None = None, *, default: str | None = "-"
) -> list[SessionLogFilter]:
    """Add a :class:`SessionLogFilter` to ``target``, or to every handler of the root logger.

    OpenTelemetry handlers get ``otel_names=True``, others the format-string fields. A handler or
    logger that already has a :class:`SessionLogFilter` is left alone, so calling this twice adds
    nothing. Call it after logging is configured; returns the filters it added.
    """
    targets: list[logging.Handler | logging.Logger]
    targets = list(logging.getLogger().handlers) if target is None else [target]
    added: list[SessionLogFilter] = []
    for filterer in targets:
        if any(isinstance(existing, SessionLogFilter) for existing in filterer.filters):
            continue
        otel_names = isinstance(filterer, logging.Handler) and _is_opentelemetry_handler(filterer)
        session_filter = SessionLogFilter(default=default, otel_names=otel_names)
        filterer.addFilter(session_filter)
        added.append(session_filter)
    return added
