"""An OpenAI-wire-format chat server on 127.0.0.1 for DSPy's default (lm15) engine.

DSPy 3.4's default engine talks HTTP over its own sockets, so vcrpy never sees it. Tests point
``dspy.LM(..., api_base=server.base_url)`` at this server instead. By default it answers every
chat request with DSPy's ChatAdapter field format, echoing the question
(``"answer to <question>"``), which lets concurrent tests check that each span belongs to the
session that asked. Scripted replies (``server.reply(...)``) are served first, in order. Bodies
come from the wire-format kit ``convotel.demo.wire``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from convotel.demo import wire

PROMPT_TOKENS = 40
COMPLETION_TOKENS = 9
MODEL = "gpt-4o-mini-2024-07-18"
ENVELOPE = wire.Envelope("chatcmpl-loopback", MODEL, created=1_700_000_000, service_tier=None)
USAGE = wire.chat_usage(PROMPT_TOKENS, COMPLETION_TOKENS, details=False)
_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.S)


def adapter_reply(**fields: str) -> str:
    """A completion in DSPy's ChatAdapter format carrying ``fields``."""
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in fields.items()]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def user_fields(request: dict[str, Any]) -> dict[str, str]:
    """The ``[[ ## field ## ]]`` values of the last user message of a chat request."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    return {name: value.strip() for name, value in _FIELD.findall(content)}


def echo_answer(request: dict[str, Any]) -> str:
    """Default reply: answer and reasoning derived from the question, so callers can be matched."""
    question = user_fields(request).get("question", "?")
    return adapter_reply(reasoning=f"thinking about {question}", answer=f"answer to {question}")


@dataclass
class Reply:
    """One scripted response: a completion text, or a raw status and body (errors, bad JSON)."""

    content: str | None = None
    status: int = 200
    raw_body: bytes | None = None
    delay: float = 0.0


def completion_body(content: str) -> dict[str, Any]:
    """A chat.completion object as the OpenAI API returns it."""
    return wire.chat_completion(ENVELOPE, wire.assistant_message(content), USAGE)


def stream_events(content: str) -> Iterator[bytes]:
    """The ``text/event-stream`` body of a streamed chat completion, usage chunk last."""
    pieces = [content[i : i + 12] for i in range(0, len(content), 12)]
    for event in wire.text_stream(ENVELOPE, pieces, usage=USAGE, opening={"role": "assistant"}):
        yield wire.sse_frame(wire.encode_event(event)).encode()


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many clients connecting at once (the reliability load test)


@dataclass
class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 speaking the chat-completions wire format."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _replies: deque[Reply] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def reply(self, *replies: Reply | str) -> None:
        """Queue replies served before the echo default (a ``str`` is a completion text)."""
        with self._lock:
            self._replies.extend(Reply(r) if isinstance(r, str) else r for r in replies)

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        return Reply(echo_answer(request))

    def start(self) -> LoopbackServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = owner._next_reply(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw_body is not None or reply.status != 200:
                    body = (
                        reply.raw_body
                        or json.dumps(wire.error_body("loopback failure", "server_error")).encode()
                    )
                    self._send(reply.status, "application/json", body)
                elif request.get("stream"):
                    self._send(
                        200, "text/event-stream", b"".join(stream_events(reply.content or ""))
                    )
                else:
                    self._send(
                        200,
                        "application/json",
                        json.dumps(completion_body(reply.content or "")).encode(),
                    )

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client went away (a cancelled call)

            def _send_events(self, events: Iterator[bytes]) -> None:
                """A streamed reply, one event per HTTP chunk (as servers stream them)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in events:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client went away (a cancelled call)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = _ThreadingServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def reset(self) -> None:
        """Forget recorded requests and unserved replies (between tests)."""
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self._replies.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
