"""Sessions from web requests: ASGI and WSGI middleware that put each request in its session.

::

    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_header="x-session-id", user_header="x-user-id")
    FastAPIInstrumentor.instrument_app(app)   # OpenTelemetry's own: the HTTP span is the root

The middleware reads the session and user ids of each request (a header, a cookie, or a callable
of yours, in that order of precedence: callable, header, cookie) and keeps them in force for the
whole request, streamed response body included, exactly as ``using_session`` / ``using_user``
would. With :class:`~convotel.propagation.SessionSpanProcessor` installed, the request's HTTP
server span (and every other span of the trace) joins the session too.

Ids follow the rules of ``using_session``: a missing id sets nothing; an empty, whitespace-only or
over-long id is handled as documented there (a warning, nothing set, or truncated); nothing about
an id ever fails the request, and a bad session id never costs a good user id (or the reverse).
A callable that raises is logged and the headers and cookies are used as if it had returned
nothing. Header values are read as UTF-8 (Latin-1 when they are not valid UTF-8).

**Clients that go away** (ASGI): when the client disconnects before the response is complete, the
request's root span gets ``convotel.client.disconnected = true`` and a ``client disconnected``
event, and the model streams the request opened and left unfinished end as ``closed_early`` with
the partial reply (their spans also carry ``convotel.client.disconnected``), not as errors. WSGI
servers give an application no such signal, so the WSGI middleware only keeps the ids in force.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context

from convotel.context import set_session, set_user
from convotel.finish import StreamWatch
from convotel.turns import has_joiners, join_current_trace

__all__ = [
    "CLIENT_DISCONNECTED",
    "IdsFromRequest",
    "SessionMiddleware",
    "WSGISessionMiddleware",
]

logger = logging.getLogger(__name__)

#: Set (``True``) on the root span of a request whose client went away before the response
#: was complete, and on the model streams that request left unfinished.
CLIENT_DISCONNECTED = "convotel.client.disconnected"
_DISCONNECT_EVENT = "client disconnected"

#: ``(session_id, user_id)`` from an ASGI scope or a WSGI environ; ``None`` for "not given".
IdsFromRequest = Callable[[Mapping[str, Any]], tuple[object, object]]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _RequestIds:
    """Where the ids of a request come from, shared by the ASGI and WSGI middleware."""

    def __init__(
        self,
        session_header: str | None,
        user_header: str | None,
        session_cookie: str | None,
        user_cookie: str | None,
        ids: IdsFromRequest | None,
    ) -> None:
        self.session_header = session_header.lower() if session_header else None
        self.user_header = user_header.lower() if user_header else None
        self.session_cookie = session_cookie
        self.user_cookie = user_cookie
        self.ids = ids

    def context(
        self, request: Mapping[str, Any], headers: Callable[[str], str | None]
    ) -> Context | None:
        """The current context with the request's ids, or ``None`` when it has none."""
        session_id, user_id = self._from_callable(request)
        cookies: SimpleCookie | None = None
        if session_id is None and self.session_header:
            session_id = headers(self.session_header)
        if user_id is None and self.user_header:
            user_id = headers(self.user_header)
        if (session_id is None and self.session_cookie) or (user_id is None and self.user_cookie):
            cookies = _cookies(headers("cookie"))
            if session_id is None and self.session_cookie:
                session_id = _cookie(cookies, self.session_cookie)
            if user_id is None and self.user_cookie:
                user_id = _cookie(cookies, self.user_cookie)
        if session_id is None and user_id is None:
            return None
        ctx = context_api.get_current()
        for value, setter in ((session_id, set_session), (user_id, set_user)):
            if value is None:
                continue
            try:
                ctx = setter(ctx, value)
            except ValueError as exc:  # strict mode: a bad id never fails the request
                logger.warning("convotel: ignoring a bad id in a request: %s", exc)
        return ctx

    def _from_callable(self, request: Mapping[str, Any]) -> tuple[object, object]:
        if self.ids is None:
            return None, None
        try:
            session_id, user_id = self.ids(request)
        except Exception:
            logger.warning(
                "convotel: the ids callable raised; using the headers and cookies only",
                exc_info=True,
            )
            return None, None
        return session_id, user_id


def _cookies(header: str | None) -> SimpleCookie:
    cookies: SimpleCookie = SimpleCookie()
    if header:
        try:
            cookies.load(header)
        except CookieError:
            logger.debug("convotel: unreadable cookie header ignored")
    return cookies


def _cookie(cookies: SimpleCookie, name: str) -> str | None:
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


def _enter(ctx: Context) -> object:
    token = context_api.attach(ctx)
    if has_joiners():  # the server span started before the ids were known: join it now
        join_current_trace(ctx)
    return token


class _IdsMiddleware:
    """What the ASGI and WSGI middleware share: where the ids come from, and reading them."""

    def __init__(
        self,
        app: Any,
        *,
        session_header: str | None = "x-session-id",
        user_header: str | None = "x-user-id",
        session_cookie: str | None = None,
        user_cookie: str | None = None,
        ids: IdsFromRequest | None = None,
    ) -> None:
        self.app = app
        self._ids = _RequestIds(session_header, user_header, session_cookie, user_cookie, ids)

    def _request_context(
        self, request: Mapping[str, Any], headers: Callable[[str], str | None]
    ) -> Context | None:
        """The context with the request's ids; ``None`` when it names none (never raises)."""
        try:
            return self._ids.context(request, headers)
        except Exception:
            logger.warning("convotel: could not read the request's ids", exc_info=True)
            return None


class SessionMiddleware(_IdsMiddleware):
    """ASGI middleware: each HTTP or WebSocket request runs in the session and user it names.

    ``session_header`` / ``user_header`` (default ``x-session-id`` / ``x-user-id``; ``None`` to
    ignore headers), ``session_cookie`` / ``user_cookie`` (cookie names, off by default) and
    ``ids`` (``ids(scope) -> (session_id, user_id)``, ``None`` for "not given") say where the
    ids come from.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = self._request_context(scope, _asgi_header_reader(scope))
        if ctx is None:
            await self.app(scope, receive, send)
            return
        request = _RequestWatch(trace_api.get_current_span(ctx))
        token = _enter(request.streams.install(ctx))
        try:
            await self.app(scope, request.receive(receive), request.send(send))
        except OSError:  # the server's "client disconnected" (uvicorn, hypercorn) is an OSError
            request.client_gone()
            raise
        finally:
            context_api.detach(token)  # type: ignore[arg-type]
            request.finish()


def _asgi_header_reader(scope: Mapping[str, Any]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in scope.get("headers") or ():
            if key.lower() == wanted:
                return _header_text(bytes(value))
        return None

    return header


def _header_text(raw: bytes) -> str:
    """A header value as text: UTF-8 (what clients send for non-ASCII ids), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _RequestWatch:
    """Watches one ASGI request for a client that goes away before the response is complete."""

    __slots__ = ("complete", "disconnected", "root", "streams")

    def __init__(self, root: trace_api.Span) -> None:
        self.root = root
        self.streams = StreamWatch()
        self.complete = False
        self.disconnected = False

    def receive(self, receive: Receive) -> Receive:
        async def watched_receive() -> Message:
            message = await receive()
            if message.get("type") in ("http.disconnect", "websocket.disconnect"):
                self.client_gone()
            return message

        return watched_receive

    def send(self, send: Send) -> Send:
        async def watched_send(message: Message) -> None:
            try:
                await send(message)
            except OSError:
                self.client_gone()
                raise
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                self.complete = True

        return watched_send

    def client_gone(self) -> None:
        if not self.complete and not self.disconnected:
            self.disconnected = True
            self.streams.reader_gone({CLIENT_DISCONNECTED: True})

    def finish(self) -> None:
        if not self.disconnected:
            return
        try:
            self.root.set_attribute(CLIENT_DISCONNECTED, True)
            self.root.add_event(_DISCONNECT_EVENT)
            self.streams.close_open()
        except Exception:
            logger.debug("convotel: could not record a client disconnect", exc_info=True)


class WSGISessionMiddleware(_IdsMiddleware):
    """WSGI middleware: each request, and the iteration of its response body, runs in the
    session and user it names. Same options as :class:`SessionMiddleware`; ``ids`` receives
    the WSGI environ."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        ctx = self._request_context(environ, _wsgi_header_reader(environ))
        if ctx is None:
            return self.app(environ, start_response)
        token = _enter(ctx)
        try:
            body = self.app(environ, start_response)
        finally:
            context_api.detach(token)  # type: ignore[arg-type]
        return _BodyInContext(body, ctx)


def _wsgi_header_reader(environ: Mapping[str, Any]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        key = "HTTP_" + name.upper().replace("-", "_")
        value = environ.get(key)  # PEP 3333: the raw bytes decoded as Latin-1
        return _header_text(value.encode("latin-1", "replace")) if isinstance(value, str) else None

    return header


class _BodyInContext:
    """A WSGI response body whose iteration and ``close()`` run in the request's context."""

    def __init__(self, body: Iterable[bytes], ctx: Context) -> None:
        self._body = body
        self._ctx = ctx

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._body)
        while True:
            token = context_api.attach(self._ctx)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                context_api.detach(token)
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            token = context_api.attach(self._ctx)
            try:
                close()
            finally:
                context_api.detach(token)
