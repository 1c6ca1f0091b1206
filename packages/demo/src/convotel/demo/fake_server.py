"""An in-process loopback server that speaks the OpenAI and Mistral HTTP wire formats.

    with FakeLLMServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="demo")
        mistral = mistralai.client.Mistral(server_url=server.mistral_server_url, api_key="demo")

Routes: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream": true``),
``POST /v1/embeddings`` and ``GET /v1/models``. OpenAI's formats are served under ``/v1`` (and
``/openai/v1``), Mistral's under ``/mistral/v1``; a Mistral SDK pointed at the bare server URL is
recognised by its User-Agent. OpenAI's bodies come from :mod:`convotel.demo.wire` (the kit the
tests and benchmarks share), Mistral's are built here. Replies come from
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

from convotel.demo import wire
from convotel.demo.fake_replies import (
    ReplyPlan,
    count_tokens,
    embedding_vector,
    plan_reply,
    request_seed,
)

Flavour = Literal["openai", "mistral"]
FAULT_HEADER = "x-convotel-fault"
#: How long a ``reset-after`` fault waits after its last write before resetting the connection.
_RESET_GRACE_SECONDS = 0.2
MISTRAL_PREFIX = "/mistral"
_DEFAULT_DIMENSIONS = {"text-embedding-3-large": 3072, "mistral-embed": 1024}
_FALLBACK_DIMENSIONS = 1536
_OPENAI_SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
}
#: Model names the server answers for (by family); others get the provider's "no such model" error.
_MODEL_FAMILIES: dict[Flavour, tuple[str, ...]] = {
    "openai": ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "davinci-", "babbage-"),
    "mistral": (
        "mistral-",
        "open-mistral",
        "open-mixtral",
        "codestral",
        "ministral",
        "pixtral",
        "magistral",
        "devstral",
    ),
}
_MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"),
    "mistral": ("mistral-small-latest", "mistral-large-latest", "mistral-embed"),
}


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


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code


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
        self, flavour: Flavour, error: _HTTPError, headers: Mapping[str, str] = {}
    ) -> None:
        if flavour == "openai":
            payload = wire.error_body(str(error), error.error_type, error.code)
        else:
            payload = {
                "object": "error",
                "message": str(error),
                "type": error.error_type,
                "param": None,
                "code": error.code,
            }
        self._send_json(error.status, payload, headers)

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
            self._send_error(flavour, _HTTPError(404, f"Unknown route {route}", "not_found"))
            return
        models = [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": flavour}
            for name in _MODELS[flavour]
        ]
        self._send_json(200, {"object": "list", "data": models})

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
            body = _parse_body(raw)
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
                        self._send_error(flavour, _injected_error(fault.status), wait)
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
                self._send_json(200, _embeddings_payload(flavour, body))
            else:
                raise _HTTPError(404, f"Unknown route {route}", "not_found")
        except _HTTPError as error:
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
        _check_model(flavour, body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(400, "'messages' must be a non-empty array", "invalid_request_error")
        caps = ("max_completion_tokens", "max_tokens") if flavour == "openai" else ("max_tokens",)
        plan = plan_reply(body, max_tokens_key=caps)
        seed = request_seed(body.get("model"), messages)
        completion_id = self.server_state._next_id(seed)
        chunks: _OpenAIFormat | _MistralFormat
        if flavour == "openai":
            chunks = _OpenAIFormat(body, plan, completion_id)
        else:
            chunks = _MistralFormat(body, plan, completion_id)
        if body.get("stream") is True:
            self._send_events(chunks.events())
        else:
            self._send_json(200, chunks.completion())


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as error:
        message = f"We could not parse the JSON body: {error}"
        raise _HTTPError(400, message, "invalid_request_error") from error
    if not isinstance(body, dict):
        raise _HTTPError(400, "The request body must be a JSON object", "invalid_request_error")
    return body


def _check_model(flavour: Flavour, body: Mapping[str, Any]) -> str:
    """The requested model; a missing or unknown one is refused as the real API refuses it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _HTTPError(400, "you must provide a model parameter", "invalid_request_error")
    if model.startswith(_MODEL_FAMILIES[flavour]):
        return model
    if flavour == "openai":
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise _HTTPError(404, message, "invalid_request_error", "model_not_found")
    raise _HTTPError(400, f"Invalid model: {model}", "invalid_model", "1500")


def _parse_fault(header: str) -> FaultSpec:
    try:
        return FaultSpec.parse(header)
    except ValueError as error:
        message = f"bad {FAULT_HEADER} header: {error}"
        raise _HTTPError(400, message, "invalid_request_error") from error


def _malformed(json_text: str) -> str:
    """``json_text`` with its first separating comma dropped: no longer JSON."""
    return json_text.replace(", ", " ", 1)


def _injected_error(status: int) -> _HTTPError:
    if status == 429:
        return _HTTPError(
            429,
            "Rate limit reached for requests. Please retry shortly.",
            "requests",
            "rate_limit_exceeded",
        )
    if status >= 500:
        return _HTTPError(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    return _HTTPError(status, "The request was rejected.", "invalid_request_error")


# -- wire formats ----------------------------------------------------------------------------


class _OpenAIFormat:
    """OpenAI ``chat.completion`` / ``chat.completion.chunk`` bodies for one reply."""

    def __init__(self, body: Mapping[str, Any], plan: ReplyPlan, completion_id: str) -> None:
        self.plan = plan
        requested = str(body["model"])
        self.envelope = wire.Envelope(
            id=f"chatcmpl-{completion_id[:29]}",
            model=_OPENAI_SNAPSHOTS.get(requested, requested),
            created=int(time.time()),
            system_fingerprint=f"fp_{completion_id[-10:]}",
        )
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.tool_calls = [
            wire.ToolCall(call.call_id, call.name, call.arguments_json) for call in plan.tool_calls
        ]

    def _usage(self) -> dict[str, Any]:
        return wire.chat_usage(self.plan.prompt_tokens, self.plan.completion_tokens)

    def completion(self) -> dict[str, Any]:
        plan = self.plan
        message = wire.assistant_message(None if self.tool_calls else plan.text, self.tool_calls)
        return wire.chat_completion(
            self.envelope, message, self._usage(), finish_reason=plan.finish_reason
        )

    def events(self) -> Iterator[str]:
        usage = self._usage() if self.include_usage else None
        if self.tool_calls:
            events = wire.tool_call_stream(self.envelope, self.tool_calls, usage=usage)
        else:
            plan = self.plan
            events = wire.text_stream(
                self.envelope, plan.pieces, usage=usage, finish_reason=plan.finish_reason
            )
        # Spaced JSON: the malformed-json fault drops the first ", " of an event.
        return (wire.encode_event(event, compact=False) for event in events)


class _MistralFormat:
    """Mistral ``chat.completion`` / ``chat.completion.chunk`` bodies (usage in the last chunk)."""

    def __init__(self, body: Mapping[str, Any], plan: ReplyPlan, completion_id: str) -> None:
        self.plan = plan
        self.id = completion_id[:32]
        self.created = int(time.time())
        self.model = str(body["model"])

    def _usage(self) -> dict[str, int]:
        plan = self.plan
        return {
            "prompt_tokens": plan.prompt_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            "completion_tokens": plan.completion_tokens,
        }

    def _tool_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": call.call_id[-9:],
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
                "index": index,
            }
            for index, call in enumerate(self.plan.tool_calls)
        ]

    def completion(self) -> dict[str, Any]:
        plan = self.plan
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.text,
            "tool_calls": None,
            "prefix": False,
        }
        if plan.tool_calls:
            message["tool_calls"] = self._tool_calls()
        return {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "usage": self._usage(),
            "created": self.created,
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
        }

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, last: bool = False
    ) -> str:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if last:
            chunk["usage"] = self._usage()
        return json.dumps(chunk)

    def events(self) -> Iterator[str]:
        plan = self.plan
        yield self._chunk({"role": "assistant", "content": ""})
        if plan.tool_calls:
            yield self._chunk({"tool_calls": self._tool_calls()})
        else:
            for piece in plan.pieces:
                yield self._chunk({"content": piece})
        yield self._chunk({"content": ""}, plan.finish_reason, last=True)
        yield "[DONE]"


def _raw_embedding_input(body: Mapping[str, Any]) -> object:
    # Both APIs name the field "input" on the wire (the Mistral SDK's ``inputs`` is an alias).
    return body.get("input", body.get("inputs"))


def _embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    value = _raw_embedding_input(body)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise _HTTPError(400, "'input' must be a string or a non-empty array", "invalid_request_error")


def _input_tokens(body: Mapping[str, Any], texts: list[str]) -> int:
    value = _raw_embedding_input(body)
    if isinstance(value, list) and value and not isinstance(value[0], str):
        return sum(len(item) if isinstance(item, list) else 1 for item in value)
    return sum(count_tokens(text) for text in texts)


def _embeddings_payload(flavour: Flavour, body: Mapping[str, Any]) -> dict[str, Any]:
    model = _check_model(flavour, body)
    texts = _embedding_inputs(body)
    requested = body.get("dimensions") if flavour == "openai" else body.get("output_dimension")
    dimensions = (
        requested
        if isinstance(requested, int) and requested > 0
        else (_DEFAULT_DIMENSIONS.get(model, _FALLBACK_DIMENSIONS))
    )
    tokens = _input_tokens(body, texts)
    vectors = [embedding_vector(text, dimensions) for text in texts]
    if flavour == "openai":
        as_base64 = body.get("encoding_format") == "base64"
        return wire.embeddings_body(
            vectors, model=model, prompt_tokens=tokens, base64_encoded=as_base64
        )
    data = [
        {"object": "embedding", "index": index, "embedding": vector}
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    seed = request_seed(model, texts)
    return {
        "id": f"{seed:032x}"[:32],
        "object": "list",
        "data": data,
        "model": model,
        "usage": usage,
    }
