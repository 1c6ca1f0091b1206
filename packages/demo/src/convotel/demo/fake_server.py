"""An in-process loopback server that speaks the OpenAI and Mistral HTTP wire formats.

    with FakeLLMServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="demo")
        mistral = mistralai.client.Mistral(server_url=server.mistral_server_url, api_key="demo")

Routes: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream": true``),
``POST /v1/embeddings`` and ``GET /v1/models``. OpenAI's formats are served under ``/v1`` (and
``/openai/v1``), Mistral's under ``/mistral/v1``; a Mistral SDK pointed at the bare server URL is
recognised by its User-Agent. The bodies come from :mod:`convotel.demo.fake_answers` (OpenAI's
built with the kit :mod:`convotel.demo.wire` the tests and benchmarks share), its replies from
:mod:`convotel.demo.fake_replies` (deterministic per conversation, token counts from its
documented tokenizer). An unknown model gets the provider's own error (OpenAI: 404
``model_not_found``; Mistral: 400 ``invalid_model``).

Fault injection: a request carrying the header ``x-convotel-fault: FAULT[*N][;retry-after-ms=MS]``
gets that fault the first N times (default 1) the same header and request body arrive, then a
normal answer. FAULT is one of:

* ``STATUS`` (4xx/5xx): that HTTP error in the provider's error shape, with ``retry-after-ms: MS``
  (default 20) and ``retry-after`` (MS in whole seconds, rounded up). The SDKs retry 429/5xx on
  their own, so ``429`` shows a retried call and ``500*3`` (more failures than the OpenAI SDK's
  two retries) an error the application sees.
* ``delay-ms=MS``: answer normally after MS milliseconds (a client timeout shorter than that
  fails the call).
* ``reset-after=K``: send the response head and the first K server-sent events (a non-streamed
  answer: its first K bytes), then reset the connection (TCP RST).
* ``truncate``: a 200 answer cut in half, framed as complete: the JSON body's first half (with
  its length), or the first half of the events, without the finish reason and ``[DONE]``.
* ``malformed-json``: a 200 answer whose JSON does not parse: the body, or the second event's
  data.
* ``malformed-sse``: a stream whose second event has no ``data:`` field name, so a conforming
  SSE parser ignores that line (a non-streamed answer gets ``malformed-json``).

Only successful (200) answers are damaged; ``retry-after-ms`` applies to ``STATUS`` only.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NoReturn

from convotel.demo.fake_answers import (
    APIError,
    Flavour,
    chat_answer,
    embeddings_payload,
    error_payload,
    injected_error,
    models_payload,
    parse_body,
)

FAULT_HEADER = "x-convotel-fault"
#: How long a ``reset-after`` fault waits after its last write before resetting the connection.
_RESET_GRACE_SECONDS = 0.2
MISTRAL_PREFIX = "/mistral"


@dataclass(frozen=True)
class ServedRequest:
    """One request the server answered (for tests and the demo's progress output)."""

    flavour: Flavour
    method: str
    path: str
    status: int
    stream: bool
    body: Mapping[str, Any]
    retry_count: int


Damage = Literal["truncate", "malformed-json", "malformed-sse"]
_DAMAGES: tuple[Damage, ...] = ("truncate", "malformed-json", "malformed-sse")


@dataclass(frozen=True)
class FaultSpec:
    """A parsed ``x-convotel-fault`` header (exactly one of the fault fields is set)."""

    status: int | None
    times: int = 1
    retry_after_ms: int = 20
    delay_ms: int | None = None
    reset_after: int | None = None
    damage: Damage | None = None

    @classmethod
    def parse(cls, header: str) -> FaultSpec:
        """Parse ``FAULT[*N][;retry-after-ms=MS]``; raises ValueError when malformed."""
        head, _, option = header.partition(";")
        fault, _, times_text = head.strip().partition("*")
        times = int(times_text) if times_text else 1
        retry_after_ms = 20
        if option:
            key, _, value = option.strip().partition("=")
            if key.strip().lower() != "retry-after-ms":
                raise ValueError(f"unknown fault option {key!r}")
            retry_after_ms = int(value)
        name, _, argument = fault.partition("=")
        if name == "delay-ms":
            return cls(None, times, retry_after_ms, delay_ms=_non_negative(name, argument))
        if name == "reset-after":
            return cls(None, times, retry_after_ms, reset_after=_non_negative(name, argument))
        for damage in _DAMAGES:
            if fault == damage:
                return cls(None, times, retry_after_ms, damage=damage)
        status = int(fault)
        if not 400 <= status <= 599:
            raise ValueError(f"fault status must be 4xx/5xx, got {status}")
        return cls(status, times, retry_after_ms)


def _non_negative(name: str, text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


@dataclass
class _Pending:
    """What is known about the request being answered, until it is recorded."""

    flavour: Flavour
    route: str
    retry_count: int
    body: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


class _LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading server that treats a client hanging up (closed stream, pool reset) as normal.

    Its listen backlog admits hundreds of clients connecting at once (socketserver's default
    of 5 makes the kernel drop their connection attempts, which then retry a second later).
    """

    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeLLMServer:
    """A loopback HTTP server (own daemon thread) answering like the OpenAI and Mistral APIs.

    ``token_delay`` seconds are slept between streamed chunks and ``latency`` before every answer,
    so spans show realistic (small) timings; both default to fast values.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        self._address = (host, port)
        self.latency = latency
        self.token_delay = token_delay
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._arrivals = 0
        self._fault_attempts: dict[str, int] = {}
        self._served: list[ServedRequest] = []
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Bind and serve in a daemon thread; returns self. Starting twice is an error."""
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer is already running")
        handler = type("BoundHandler", (_Handler,), {"server_state": self})
        httpd = _LoopbackHTTPServer(self._address, handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="convotel-fake-llm",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and records ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI``."""
        return f"{self.url}/v1"

    @property
    def mistral_server_url(self) -> str:
        """The ``server_url`` for ``mistralai.Mistral``."""
        return f"{self.url}{MISTRAL_PREFIX}"

    @property
    def served(self) -> list[ServedRequest]:
        """A copy of every request answered so far, in order."""
        with self._lock:
            return list(self._served)

    @property
    def arrivals(self) -> int:
        """How many POST requests have arrived (answered or not yet, e.g. delayed by a fault)."""
        with self._lock:
            return self._arrivals

    def wait_for_arrivals(self, count: int, timeout: float) -> bool:
        """Block until ``count`` POST requests have arrived; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self._arrivals >= count, timeout)

    def _arrive(self) -> None:
        with self._arrived:
            self._arrivals += 1
            self._arrived.notify_all()

    def _record(self, request: ServedRequest) -> None:
        with self._lock:
            self._served.append(request)

    def _next_id(self, seed: int) -> str:
        with self._lock:
            self._counter += 1
            counter = self._counter
        return hashlib.sha256(f"{seed}:{counter}".encode()).hexdigest()

    def _should_fail(self, fault: FaultSpec, header: str, body: bytes) -> bool:
        key = hashlib.sha256(header.encode() + b"\0" + body).hexdigest()
        with self._lock:
            attempts = self._fault_attempts.get(key, 0)
            self._fault_attempts[key] = attempts + 1
        return attempts < fault.times


class _Handler(BaseHTTPRequestHandler):
    """Parses a request, routes it, writes the provider-shaped answer."""

    server_state: FakeLLMServer
    _pending: _Pending | None = None
    #: A fault that damages this request's successful answer (reset, truncate, malformed...).
    _damage: FaultSpec | None = None
    protocol_version = "HTTP/1.1"
    server_version = "convotel-fake-llm/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the demo prints its own progress."""

    # -- plumbing ----------------------------------------------------------------------------

    def _flavour_and_route(self) -> tuple[Flavour, str]:
        path = self.path.split("?", 1)[0]
        if path.startswith(MISTRAL_PREFIX + "/"):
            return "mistral", path[len(MISTRAL_PREFIX) :]
        if path.startswith("/openai/"):
            return "openai", path[len("/openai") :]
        agent = self.headers.get("user-agent", "").lower()
        return ("mistral" if agent.startswith("mistral") else "openai"), path

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode()
        damage = self._damage if status == HTTPStatus.OK else None
        if damage is not None and damage.damage == "truncate":
            data = data[: len(data) // 2]
        elif damage is not None and damage.damage is not None:
            data = _malformed(data.decode()).encode()
        self._record_answer(status)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{hashlib.md5(data).hexdigest()}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if damage is not None and damage.reset_after is not None:
            self.wfile.write(data[: damage.reset_after])
            self._reset_connection()
        self.wfile.write(data)

    def _send_error(
        self, flavour: Flavour, error: APIError, headers: Mapping[str, str] = {}
    ) -> None:
        self._send_json(error.status, error_payload(flavour, error), headers)

    def _send_events(self, events: Iterator[str]) -> None:
        frames = [f"data: {data}\n\n" for data in events]
        damage = self._damage
        if damage is not None and damage.damage == "truncate":
            frames = frames[: len(frames) // 2]
        elif damage is not None and damage.damage == "malformed-json":
            frames[1] = f"data: {_malformed(frames[1][len('data: ') : -2])}\n\n"
        elif damage is not None and damage.damage == "malformed-sse":
            frames[1] = frames[1][len("data: ") :]
        self._record_answer(HTTPStatus.OK)
        self.send_response(HTTPStatus.OK)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for index, text in enumerate(frames):
            if damage is not None and damage.reset_after == index:
                self._reset_connection()
            if index and self.server_state.token_delay:
                time.sleep(self.server_state.token_delay)
            frame = text.encode()
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
        if damage is not None and damage.reset_after is not None:
            self._reset_connection()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _reset_connection(self) -> NoReturn:
        """Abort the connection with a TCP RST (what a crashed server or proxy sends).

        Raises ConnectionAbortedError, which ends this handler quietly (see handle_error). The
        client's kernel drops received data its reader has not taken yet when the reset arrives,
        so the reset waits a moment after the last write: what was sent is then what was read.
        """
        self.wfile.flush()
        time.sleep(_RESET_GRACE_SECONDS)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.wfile.close()
        self.rfile.close()
        self.connection.close()
        raise ConnectionAbortedError("x-convotel-fault: connection reset")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    # -- verbs -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        """``GET /v1/models``."""
        flavour, route = self._flavour_and_route()
        if route != "/v1/models":
            self._send_error(flavour, APIError(404, f"Unknown route {route}", "not_found"))
            return
        self._send_json(200, models_payload(flavour))

    def do_POST(self) -> None:
        """Chat completions and embeddings, with fault injection."""
        flavour, route = self._flavour_and_route()
        raw = self._read_body()
        state = self.server_state
        state._arrive()
        self._damage = None
        self._pending = _Pending(
            flavour, route, int(self.headers.get("x-stainless-retry-count") or 0)
        )
        try:
            body = parse_body(raw)
            self._pending.body = body
            self._pending.stream = body.get("stream") is True
            fault_header = self.headers.get(FAULT_HEADER)
            if fault_header:
                fault = _parse_fault(fault_header)
                if state._should_fail(fault, fault_header, raw):
                    if fault.status is not None:
                        wait = {
                            "retry-after-ms": str(fault.retry_after_ms),
                            "retry-after": str(-(-fault.retry_after_ms // 1000)),
                        }
                        self._send_error(flavour, injected_error(fault.status), wait)
                        return
                    if fault.delay_ms is not None:
                        time.sleep(fault.delay_ms / 1000)
                    else:
                        self._damage = fault
            if state.latency:
                time.sleep(state.latency)
            if route == "/v1/chat/completions":
                self._chat(flavour, body)
            elif route == "/v1/embeddings":
                self._send_json(200, embeddings_payload(flavour, body))
            else:
                raise APIError(404, f"Unknown route {route}", "not_found")
        except APIError as error:
            self._send_error(flavour, error)

    def _record_answer(self, status: int) -> None:
        """Record the request before its answer is written, so clients never see it missing."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.server_state._record(
                ServedRequest(
                    pending.flavour,
                    "POST",
                    pending.route,
                    status,
                    pending.stream,
                    pending.body,
                    pending.retry_count,
                )
            )

    def _chat(self, flavour: Flavour, body: dict[str, Any]) -> None:
        answer = chat_answer(flavour, body, self.server_state._next_id)
        if body.get("stream") is True:
            self._send_events(answer.events())
        else:
            self._send_json(200, answer.completion())


def _parse_fault(header: str) -> FaultSpec:
    try:
        return FaultSpec.parse(header)
    except ValueError as error:
        message = f"bad {FAULT_HEADER} header: {error}"
        raise APIError(400, message, "invalid_request_error") from error


def _malformed(json_text: str) -> str:
    """``json_text`` with its first separating comma dropped: no longer JSON."""
    return json_text.replace(", ", " ", 1)
