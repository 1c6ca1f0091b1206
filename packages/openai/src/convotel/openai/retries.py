"""Retry visibility: one span per logical call, annotated with each automatic SDK retry.

The SDK retries inside the wrapped call (429, 408, 409, 5xx and connection errors), calling its
``_sleep_for_retry`` hook once per retry inside our call (:func:`~convotel.call_span.inside_call`).
Each retry adds a ``retry`` event (attempt number, HTTP status of the failed attempt) and sets
``http.request.resend_count`` to the number of retries so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.util.types import AttributeValue

from convotel.call_span import Tracing, inside_call, log_once
from convotel.endpoints import WrapperFunction

RETRY_EVENT = "retry"


def record_retries(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
    """A wrapper for ``SyncAPIClient._sleep_for_retry`` / ``AsyncAPIClient._sleep_for_retry``."""

    def before_retry(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            call = inside_call(get_tracing())  # only this instrumentor's model calls
            if call is not None and call.span.is_recording():
                span = call.span
                resends = int(kwargs.get("retries_taken", 0)) + 1
                event: dict[str, AttributeValue] = {HTTP_REQUEST_RESEND_COUNT: resends}
                status = getattr(kwargs.get("response"), "status_code", None)
                if isinstance(status, int):
                    event[HTTP_RESPONSE_STATUS_CODE] = status
                span.add_event(RETRY_EVENT, event)
                span.set_attribute(HTTP_REQUEST_RESEND_COUNT, resends)
        except Exception as exc:  # noqa: BLE001 - recording a retry must never break it
            log_once("recording an OpenAI retry", exc)
        return wrapped(*args, **kwargs)  # the sleep (a coroutine for the async client)

    return before_retry
