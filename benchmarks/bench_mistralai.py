"""Overhead of convotel-mistralai per call: instrumented minus uninstrumented, against the floor.

Run: ``python benchmarks/bench_mistralai.py [--calls N] [--rounds R]``.

The real ``Mistral`` client, the wire bodies of ``cassettes/mistralai/`` (a chat completion; a
chat stream stretched to ``STREAM_CHUNKS`` content chunks) and spans to a counting exporter:

* the SDK method is swapped for a stub *before* instrumenting: ``Chat.complete`` returns the SDK's
  real parsed response, ``Chat.stream`` a real ``EventStream`` over the recorded SSE bytes (the
  SDK's own SSE reader; its per-chunk pydantic decoding is cached so it does not drown the
  numbers). Instrumented minus uninstrumented is then exactly what the tracer adds: extraction,
  the span, the stream proxy and accumulator;
* for scale, the same uninstrumented calls through the whole SDK and an in-process mock
  transport (the SDK builds pydantic models per request: milliseconds per call).

Each row prints the median overhead over alternating rounds (thread CPU time, so other processes
on the machine do not count), the floor (starting and ending one span with as many attributes
as the tracer recorded: what any tracer pays at least; one span's worth also in the per-chunk
rows) and overhead / floor, for convotel and for ``openinference-instrumentation-mistralai``
when it is installed. Compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from mistralai.client import Mistral, basesdk, models
from mistralai.client.chat import Chat
from mistralai.client.utils.eventstreaming import EventStream
from mistralai.client.utils.unmarshal_json_response import unmarshal_json_response
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from convotel import using_session
from convotel.mistralai import MistralAIInstrumentor

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "mistralai"
STREAM_CHUNKS = 50
STREAM_EVENTS = STREAM_CHUNKS + 2  # events the app sees: role chunk, content chunks, usage chunk
MESSAGES: Any = [{"role": "user", "content": "Say hello in French."}]
http: Any = vars(basesdk)["httpx"]  # httpx2 for mistralai 3.x, httpx for 2.x


class CountingExporter(SpanExporter):
    """Counts exported spans and keeps the last one (to size the floor)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def recorded_body(name: str) -> str:
    cassette = yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())
    return str(cassette["interactions"][0]["response"]["body"]["string"])


CHAT_BODY = recorded_body("chat_complete").encode()


def long_stream_body() -> bytes:
    """The recorded chat stream with its first content chunk repeated ``STREAM_CHUNKS`` times."""
    events = [block for block in recorded_body("chat_stream").split("\n\n") if block.strip()]
    assert events[-1] == "data: [DONE]"
    first, content, last = events[0], events[1], events[-2]
    return "\n\n".join([first, *[content] * STREAM_CHUNKS, last, "data: [DONE]", ""]).encode()


STREAM_BODY = long_stream_body()


def mock_client() -> Mistral:
    def answer(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream"}
            return http.Response(200, headers=headers, content=STREAM_BODY)
        return http.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)

    return Mistral(api_key="bench-key", client=http.Client(transport=http.MockTransport(answer)))


def chat_call(client: Mistral) -> None:
    client.chat.complete(model="mistral-small-latest", messages=MESSAGES, temperature=0.2)


def stream_call(client: Mistral) -> None:
    with client.chat.stream(model="mistral-small-latest", messages=MESSAGES) as stream:
        for _ in stream:
            pass


@contextmanager
def stubbed_sdk() -> Iterator[None]:
    """``Chat.complete``/``Chat.stream`` answer at once with the SDK's own objects (no HTTP)."""
    response = http.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)
    parsed = unmarshal_json_response(models.ChatCompletionResponse, response)

    def complete(self: Chat, **kwargs: Any) -> Any:
        return parsed

    decoded: dict[str, Any] = {}

    def stream(self: Chat, **kwargs: Any) -> Any:
        sse = http.Response(200, headers={"content-type": "text/event-stream"}, content=STREAM_BODY)

        def decode(raw: str) -> Any:
            if raw not in decoded:
                decoded[raw] = unmarshal_json_response(models.CompletionEvent, sse, raw)
            return decoded[raw]

        return EventStream(sse, decode, sentinel="[DONE]")

    originals = vars(Chat)["complete"], vars(Chat)["stream"]
    Chat.complete, Chat.stream = complete, stream  # type: ignore[method-assign]
    try:
        yield
    finally:
        Chat.complete, Chat.stream = originals  # type: ignore[method-assign]


def cpu_ns_per_call(call: Callable[[], None], calls: int) -> float:
    start = time.thread_time_ns()
    for _ in range(calls):
        call()
    return (time.thread_time_ns() - start) / calls


def floor_ns(provider: TracerProvider, attribute_count: int, calls: int) -> float:
    """Start and end one span with ``attribute_count`` attributes (no convotel code at all)."""
    tracer = provider.get_tracer("floor")
    attributes = {f"attribute.{index}": f"value {index}" for index in range(attribute_count)}

    def one_span() -> None:
        span = tracer.start_span("floor")
        span.set_attributes(attributes)
        span.end()

    return min(cpu_ns_per_call(one_span, calls) for _ in range(5))


class Tracer:
    """One way of tracing the client: convotel or OpenInference."""

    def __init__(self, name: str, on: Callable[[], None], off: Callable[[], None]) -> None:
        self.name, self.on, self.off = name, on, off


def tracers(provider: TracerProvider) -> list[Tracer]:
    convotel = MistralAIInstrumentor()
    found = [
        Tracer(
            "convotel", lambda: convotel.instrument(tracer_provider=provider), convotel.uninstrument
        )
    ]
    try:
        from openinference.instrumentation.mistralai import MistralAIInstrumentor as OpenInference
    except ImportError:
        print("openinference-instrumentation-mistralai is not installed: its rows are skipped")
        return found
    other = OpenInference()
    found.append(
        Tracer(
            "openinference", lambda: other.instrument(tracer_provider=provider), other.uninstrument
        )
    )
    return found


def sdk_cost_ns(call: Callable[[Mistral], None], per: int, calls: int, rounds: int) -> float:
    """Uninstrumented cost of ``call`` through the whole SDK and the mock transport."""
    client = mock_client()
    call(client)
    return (
        statistics.median(cpu_ns_per_call(lambda: call(client), calls) for _ in range(rounds)) / per
    )


def measure(
    case: str, call: Callable[[Mistral], None], per: int, calls: int, rounds: int, sdk_ns: float
) -> list[str]:
    """Table rows for ``call``: overhead, floor and ratios per tracer (per ``per`` units)."""
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = mock_client()
    call(client)  # warm up imports and caches
    rows = []
    for tracer in tracers(provider):
        overheads = []
        for _ in range(rounds):  # alternate, so both sides share the machine's drift
            base = cpu_ns_per_call(lambda: call(client), calls)
            tracer.on()
            exported = exporter.count
            with using_session("bench-session"):
                traced = cpu_ns_per_call(lambda: call(client), calls)
            tracer.off()
            assert exporter.count - exported == calls, "one span per call expected"
            overheads.append((traced - base) / per)
        assert exporter.last is not None
        attribute_count = len(exporter.last.attributes or {})
        floor = floor_ns(provider, attribute_count, 2000)  # one span, also for per-chunk rows
        overhead = statistics.median(overheads)
        rows.append(
            f"| {case} | {tracer.name} | {sdk_ns / 1000:8.1f} | {overhead / 1000:7.2f} "
            f"| {100 * overhead / sdk_ns:5.2f}% | {attribute_count:3d} | {floor / 1000:6.2f} "
            f"| {overhead / floor:5.1f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per round (wrapper rows)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating timing rounds")
    options = parser.parse_args()
    calls, rounds = options.calls, options.rounds
    chunk = f"per chunk, {STREAM_EVENTS} chunks"
    few = max(calls // 40, 5)
    chat_sdk = sdk_cost_ns(chat_call, 1, few, rounds)
    stream_sdk = sdk_cost_ns(stream_call, STREAM_EVENTS, few, rounds)
    print(
        "| case | tracer | SDK call us | overhead us | of SDK call | attributes "
        "| floor us | overhead / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with stubbed_sdk():
        rows = [
            *measure("chat.complete (per call)", chat_call, 1, calls, rounds, chat_sdk),
            *measure(
                f"chat.stream ({chunk})",
                stream_call,
                STREAM_EVENTS,
                calls // 10,
                rounds,
                stream_sdk,
            ),
        ]
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
