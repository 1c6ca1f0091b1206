"""Usage for streams the application did not ask it for, and servers that refuse to send it.

OpenAI reports a stream's token usage only when asked (``stream_options={"include_usage": True}``),
in a last chunk without choices. With ``TraceConfig(request_stream_usage=True)`` (the default)
the chat and legacy completion endpoints ask on the application's behalf and hide that chunk.
Some OpenAI-compatible servers reject the option; the wrappers here make that invisible:

* a call whose added option is answered with HTTP 400 or 422 naming ``stream_options`` is sent
  once more exactly as the application wrote it, and the application gets that answer (a stream,
  or the error it would have had without convotel);
* the server (its base URL and default query, e.g. Azure's ``api-version``) is remembered, at
  most :data:`MAX_REMEMBERED` of them, so later calls there are sent unchanged straight away.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from openai import APIStatusError
from opentelemetry import trace as trace_api
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from convotel.json_encoding import safe_json_dumps
from convotel.spans import Tracing, WrapperFunction, async_wrapper, log_once, sync_wrapper

if TYPE_CHECKING:
    from convotel.openai.endpoints import UsageRequestingEndpoint

__all__ = [
    "MAX_REMEMBERED",
    "REJECTED_EVENT",
    "RejectingServers",
    "async_usage_wrapper",
    "rejects_stream_options",
    "server_key",
    "sync_usage_wrapper",
]

logger = logging.getLogger("convotel")

#: Span event of a call whose server rejected ``stream_options`` (then sent unchanged).
REJECTED_EVENT = "convotel.stream_usage.rejected"
#: How many rejecting servers are remembered (the least recently used is forgotten first).
MAX_REMEMBERED = 256
_OPTION = "stream_options"
_REJECTION_STATUSES = (400, 422)

WrapperFactory = Callable[[Callable[[], Tracing]], WrapperFunction]


class RejectingServers:
    """Servers that refused ``stream_options``: a bounded, thread-safe LRU set of keys."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or key not in self._keys:
            return False
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
        return True

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self._limit:
                self._keys.popitem(last=False)


def server_key(resource: Any) -> str | None:
    """The server an SDK resource (``client.chat.completions``...) sends to, or ``None``."""
    client = getattr(resource, "_client", None)
    base_url = getattr(client, "base_url", None)
    if base_url is None:
        return None
    query = getattr(client, "default_query", None)
    if isinstance(query, Mapping) and query:
        return f"{base_url}?{sorted((str(k), str(v)) for k, v in query.items())}"
    return str(base_url)


def _server_name(resource: Any) -> str:
    """Scheme, host, port and path of the server (no credentials or query), for the log."""
    url = resource._client.base_url
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def rejects_stream_options(exc: BaseException) -> bool:
    """Whether ``exc`` is a server refusing the request because of ``stream_options``."""
    if not isinstance(exc, APIStatusError) or exc.status_code not in _REJECTION_STATUSES:
        return False
    message = exc.message
    return (isinstance(message, str) and _OPTION in message) or _OPTION in safe_json_dumps(exc.body)


def _added_option(kwargs: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    """Whether convotel changed the application's ``stream_options`` in ``sent``."""
    return sent.get(_OPTION) is not kwargs.get(_OPTION)


def _is_rejection(exc: BaseException) -> bool:
    try:
        return rejects_stream_options(exc)
    except Exception as failure:  # noqa: BLE001 - deciding must never break the call
        log_once("reading a stream_options rejection", failure)
        return False


def _remember_rejection(
    endpoint: UsageRequestingEndpoint, instance: Any, exc: BaseException
) -> None:
    """Remember the server, log it once and note the rejection on the call's span."""
    try:
        key = server_key(instance)
        if key is not None and key not in endpoint.rejecting:
            endpoint.rejecting.add(key)
            logger.info(
                "convotel: %s rejected stream_options; its streamed calls are sent unchanged "
                "and report no token usage",
                _server_name(instance),
            )
        span = trace_api.get_current_span()  # the call's span, current while the SDK runs
        span.add_event(REJECTED_EVENT, {HTTP_RESPONSE_STATUS_CODE: getattr(exc, "status_code", 0)})
    except Exception as failure:  # noqa: BLE001
        log_once("remembering a stream_options rejection", failure)


def _known_rejecting(endpoint: UsageRequestingEndpoint, instance: Any) -> bool:
    try:
        return len(endpoint.rejecting) > 0 and server_key(instance) in endpoint.rejecting
    except Exception as exc:  # noqa: BLE001
        log_once("looking up a stream_options rejection", exc)
        return False


def sync_usage_wrapper(endpoint: UsageRequestingEndpoint) -> WrapperFactory:
    """The core's sync wrapper for ``endpoint``, sending its added option with the fallback."""

    def factory(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
        traced = sync_wrapper(get_tracing, endpoint)

        def wrapper(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if kwargs.get("stream") is not True:
                return traced(wrapped, instance, args, kwargs)

            def send(*call_args: Any, **call_kwargs: Any) -> Any:
                if not _added_option(kwargs, call_kwargs):
                    return wrapped(*call_args, **call_kwargs)
                if _known_rejecting(endpoint, instance):
                    return endpoint.sent_unchanged(wrapped(*call_args, **kwargs))
                try:
                    return wrapped(*call_args, **call_kwargs)
                except APIStatusError as exc:
                    if not _is_rejection(exc):
                        raise
                    _remember_rejection(endpoint, instance, exc)
                # outside the handler: the application's error does not chain the rejection
                return endpoint.sent_unchanged(wrapped(*call_args, **kwargs))

            return traced(send, instance, args, kwargs)

        return wrapper

    return factory


def async_usage_wrapper(endpoint: UsageRequestingEndpoint) -> WrapperFactory:
    """The core's async wrapper for ``endpoint``, sending its added option with the fallback."""

    def factory(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
        traced = async_wrapper(get_tracing, endpoint)

        def wrapper(  # returns the traced call's coroutine: no extra await on the hot path
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if kwargs.get("stream") is not True:
                return traced(wrapped, instance, args, kwargs)

            async def send(*call_args: Any, **call_kwargs: Any) -> Any:
                if not _added_option(kwargs, call_kwargs):
                    return await wrapped(*call_args, **call_kwargs)
                if _known_rejecting(endpoint, instance):
                    return endpoint.sent_unchanged(await wrapped(*call_args, **kwargs))
                try:
                    return await wrapped(*call_args, **call_kwargs)
                except APIStatusError as exc:
                    if not _is_rejection(exc):
                        raise
                    _remember_rejection(endpoint, instance, exc)
                return endpoint.sent_unchanged(await wrapped(*call_args, **kwargs))

            return traced(send, instance, args, kwargs)

        return wrapper

    return factory
