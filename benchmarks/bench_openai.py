"""Per-call overhead of convotel-openai, side by side with the other OpenAI instrumentors.

Responses come from an in-process ``httpx2.MockTransport`` (no sockets) and spans go to a counting
exporter. Each instrumentor runs in its own worker process (they never see each other); the parent
interleaves their timed batches and reports the overhead (instrumented minus uninstrumented, thread
CPU time, least of the rounds) as a multiple of the *floor*: starting and ending one span carrying
the attributes convotel records for that call. Streams are timed at two lengths; the difference
gives the cost per chunk. Every instrumentor runs with its defaults (full message content, except
the official OpenTelemetry one). By default the SDK answers from responses parsed once through the
mock transport, so the SDK's own milliseconds of work do not drown the overhead; ``--end-to-end``
times whole calls through the transport instead. See benchmarks/README.md.

    python benchmarks/bench_openai.py                 # the table (isolated mode)
    python benchmarks/bench_openai.py --end-to-end    # whole SDK calls (needs a quiet machine)
    python benchmarks/bench_openai.py --profile       # where convotel's time goes (cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import gc
import importlib
import json
import pstats
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for a travel agency."},
    {"role": "user", "content": "Suggest a three-day itinerary for Lisbon in spring, briefly."},
]
ANSWER = (
    "Day 1: Alfama, the castle and a fado dinner. Day 2: Belém, its tower and pastries, then "
    "LX Factory. Day 3: a day trip to Sintra's palaces, back for sunset at a miradouro."
)
SHORT_STREAM, LONG_STREAM = 20, 200
EMBEDDING_DIMENSIONS = 1536


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


# --- the in-process OpenAI server -----------------------------------------------------------------


def _chat_body() -> bytes:
    usage = {
        "prompt_tokens": 38,
        "completion_tokens": 52,
        "total_tokens": 90,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    message = {"role": "assistant", "content": ANSWER, "refusal": None, "annotations": []}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    completion = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1731000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": "fp_bench",
    }
    return json.dumps(completion).encode()


def _stream_body(chunks: int) -> bytes:
    words = (ANSWER.split(" ") * (chunks // 20 + 1))[: chunks - 2]
    deltas = [{"role": "assistant", "content": ""}, *({"content": " " + w} for w in words), {}]
    lines = []
    for index, delta in enumerate(deltas):
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": "stop" if index == len(deltas) - 1 else None,
        }
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1731000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [choice],
        }
        lines.append(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n")
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def _embeddings_body() -> bytes:
    vector = [((i * 37) % 100) / 100 for i in range(EMBEDDING_DIMENSIONS)]
    encoded = base64.b64encode(struct.pack(f"<{EMBEDDING_DIMENSIONS}f", *vector)).decode()
    data = [{"object": "embedding", "index": i, "embedding": encoded} for i in range(2)]
    body = {
        "object": "list",
        "data": data,
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    return json.dumps(body).encode()


BODIES = {
    "chat": (_chat_body(), "application/json"),
    "embeddings": (_embeddings_body(), "application/json"),
    SHORT_STREAM: (_stream_body(SHORT_STREAM), "text/event-stream"),
    LONG_STREAM: (_stream_body(LONG_STREAM), "text/event-stream"),
}


def _answer(request: httpx2.Request) -> httpx2.Response:
    if request.url.path.endswith("/embeddings"):
        key: object = "embeddings"
    else:
        request_body = json.loads(request.content)
        key = request_body.get("max_tokens", "chat") if request_body.get("stream") else "chat"
    body, content_type = BODIES[key]  # type: ignore[index]
    return httpx2.Response(200, headers={"content-type": content_type}, content=body)


SYNC = openai.OpenAI(
    api_key="sk-bench", http_client=httpx2.Client(transport=httpx2.MockTransport(_answer))
)
ASYNC = openai.AsyncOpenAI(
    api_key="sk-bench", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(_answer))
)


CHAT_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "messages": MESSAGES,
    "temperature": 0.7,
    "max_tokens": 200,
}


def _stream_request(chunks: int) -> dict[str, Any]:
    # max_tokens picks the stream length on the mock server
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": chunks, "stream": True}


@dataclass(frozen=True)
class Scenario:
    name: str
    endpoint: str  # "chat" or "embeddings"
    request: dict[str, Any]
    is_async: bool = False

    @property
    def streams(self) -> bool:
        return bool(self.request.get("stream"))


SCENARIOS = [
    Scenario("sync chat", "chat", CHAT_REQUEST),
    Scenario("async chat", "chat", CHAT_REQUEST, is_async=True),
    Scenario(f"stream, {SHORT_STREAM} chunks", "chat", _stream_request(SHORT_STREAM)),
    Scenario(f"stream, {LONG_STREAM} chunks", "chat", _stream_request(LONG_STREAM)),
    Scenario(
        "embeddings (2 x 1536)",
        "embeddings",
        {"model": "text-embedding-3-small", "input": ["a cat", "a dog"]},
    ),
]
SHORT, LONG = SCENARIOS[2], SCENARIOS[3]

Batch = Callable[[int], float]  # run n calls, return CPU microseconds per call


def _consume(result: Any) -> None:
    if isinstance(result, openai.Stream):
        for _ in result:
            pass


async def _consume_async(result: Any) -> None:
    if isinstance(result, openai.AsyncStream):
        async for _ in result:
            pass


def _batch(scenario: Scenario, call: Callable[[], Any], async_call: Callable[[], Any]) -> Batch:
    if scenario.is_async:

        def run_async(n: int) -> float:
            async def calls() -> float:
                start = time.thread_time_ns()
                for _ in range(n):
                    await _consume_async(await async_call())
                return (time.thread_time_ns() - start) / n / 1000

            return asyncio.run(calls())

        return run_async

    def run(n: int) -> float:
        start = time.thread_time_ns()
        for _ in range(n):
            _consume(call())
        return (time.thread_time_ns() - start) / n / 1000

    return run


def sdk_batch(scenario: Scenario) -> Batch:
    """Calls the way an application makes them: ``client.chat.completions.create(...)``."""

    def resource(client: Any) -> Any:
        return client.chat.completions if scenario.endpoint == "chat" else client.embeddings

    return _batch(
        scenario,
        lambda: resource(SYNC).create(**scenario.request),
        lambda: resource(ASYNC).create(**scenario.request),
    )


# --- isolated mode: the SDK answers with ready-made objects ---


class PrebuiltStream(openai.Stream[Any]):
    """A real ``openai.Stream`` that yields chunks parsed once, ahead of time."""

    def __init__(self, chunks: list[Any], client: Any) -> None:
        super().__init__(cast_to=object, response=_STREAM_RESPONSE, client=client)
        self._iterator = iter(chunks)


class PrebuiltAsyncStream(openai.AsyncStream[Any]):
    def __init__(self, chunks: list[Any], client: Any) -> None:
        super().__init__(cast_to=object, response=_STREAM_RESPONSE, client=client)

        async def chunk_iterator() -> Any:
            for chunk in chunks:
                yield chunk

        self._iterator = chunk_iterator()


_STREAM_RESPONSE = httpx2.Response(
    200, request=httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
)


@dataclass
class Prebuilt:
    """One scenario's parsed response and the arguments ``create`` passed to ``request``."""

    response: Any
    request_args: tuple[Any, ...]
    request_kwargs: dict[str, Any]

    def answer(self, client: Any, is_async: bool) -> Any:
        if isinstance(self.response, list):
            return (PrebuiltAsyncStream if is_async else PrebuiltStream)(self.response, client)
        return self.response


def _key(endpoint: str, body: dict[str, Any]) -> tuple[str, object]:
    return endpoint, body.get("max_tokens") if body.get("stream") else None


def install_prebuilt_sdk() -> Callable[[Scenario], Batch]:
    """Make the SDK answer from memory below every instrumentor's hook; return a batch factory.

    convotel, OpenLLMetry and the official instrumentor wrap the resource methods
    (``Completions.create``); OpenInference wraps the client's ``request()``. Both are replaced by
    stubs returning responses parsed once through the mock transport, so a timed call costs the
    instrumentor's own work plus a fraction of a microsecond.
    """
    from openai._base_client import AsyncAPIClient, SyncAPIClient
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.embeddings import AsyncEmbeddings, Embeddings

    prebuilt: dict[tuple[str, object], Prebuilt] = {}
    original_request = SyncAPIClient.request
    for scenario in SCENARIOS:
        if scenario.is_async:
            continue
        seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def recording_request(self: Any, *args: Any, seen: list[Any] = seen, **kwargs: Any) -> Any:
            seen.append((args, kwargs))
            return original_request(self, *args, **kwargs)

        SyncAPIClient.request = recording_request  # type: ignore[method-assign,assignment]
        try:
            resource = SYNC.chat.completions if scenario.endpoint == "chat" else SYNC.embeddings
            response = resource.create(**scenario.request)
            response = list(response) if scenario.streams else response
        finally:
            SyncAPIClient.request = original_request  # type: ignore[method-assign]
        ((args, kwargs),) = seen
        prebuilt[_key(scenario.endpoint, scenario.request)] = Prebuilt(response, args, kwargs)

    def create_stub(endpoint: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def acreate(self: Any, **kwargs: Any) -> Any:
                return prebuilt[_key(endpoint, kwargs)].answer(self._client, True)

            return acreate

        def create(self: Any, **kwargs: Any) -> Any:
            return prebuilt[_key(endpoint, kwargs)].answer(self._client, False)

        return create

    def request_stub(is_async: bool) -> Callable[..., Any]:
        def find(options: Any) -> Prebuilt:
            endpoint = "embeddings" if options.url.endswith("/embeddings") else "chat"
            return prebuilt[_key(endpoint, options.json_data)]

        if is_async:

            async def arequest(self: Any, cast_to: Any, options: Any, **kwargs: Any) -> Any:
                return find(options).answer(self, True)

            return arequest

        def request(self: Any, cast_to: Any, options: Any, **kwargs: Any) -> Any:
            return find(options).answer(self, False)

        return request

    Completions.create = create_stub("chat", False)  # type: ignore[method-assign]
    AsyncCompletions.create = create_stub("chat", True)  # type: ignore[method-assign]
    Embeddings.create = create_stub("embeddings", False)  # type: ignore[method-assign]
    AsyncEmbeddings.create = create_stub("embeddings", True)  # type: ignore[method-assign]
    SyncAPIClient.request = request_stub(False)  # type: ignore[method-assign]
    AsyncAPIClient.request = request_stub(True)  # type: ignore[method-assign]

    def client_batch(scenario: Scenario) -> Batch:
        """Calls entering at ``client.request(...)`` with what ``create`` would have passed."""
        recorded = prebuilt[_key(scenario.endpoint, scenario.request)]
        return _batch(
            scenario,
            lambda: SYNC.request(*recorded.request_args, **recorded.request_kwargs),
            lambda: ASYNC.request(*recorded.request_args, **recorded.request_kwargs),
        )

    return client_batch


def wraps_client_request() -> bool:
    """Whether the active instrumentor hooks ``OpenAI.request`` rather than the resources."""
    return hasattr(vars(openai.OpenAI).get("request"), "__wrapped__")


# --- contenders, each in its own worker process ------------------------------------------------


@dataclass(frozen=True)
class Contender:
    label: str
    module: str  # "" for the uninstrumented SDK and for the floor


CONTENDERS = [
    Contender("convotel", "convotel.openai"),
    Contender("OpenInference", "openinference.instrumentation.openai"),
    Contender("OpenLLMetry", "opentelemetry.instrumentation.openai"),
    Contender("OTel official (v2)", "opentelemetry.instrumentation.openai_v2"),
]
UNINSTRUMENTED, FLOOR = Contender("none", ""), Contender("floor", "")


def counting_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(CountingExporter()))
    return provider


def convotel_spans() -> list[tuple[str, dict[str, Any]]]:
    """Name and attributes of the span convotel records for one call of each scenario."""
    from convotel.openai import OpenAIInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        for scenario in SCENARIOS:
            sdk_batch(scenario)(1)
    finally:
        instrumentor.uninstrument()
    return [(span.name, dict(span.attributes or {})) for span in exporter.get_finished_spans()]


def floor_batch(provider: TracerProvider, name: str, attributes: dict[str, Any]) -> Batch:
    """Start and end one span with ``attributes``: the least any tracer of this call can cost."""
    tracer = provider.get_tracer("floor")

    def run(n: int) -> float:
        start = time.thread_time_ns()
        for _ in range(n):
            span = tracer.start_span(name)
            span.set_attributes(attributes)
            span.end()
        return (time.thread_time_ns() - start) / n / 1000

    return run


def worker(label: str, isolated: bool) -> None:
    """Serve timed batches for one contender: read "scenario entry n", answer microseconds/call.

    A process per contender keeps them from seeing each other (some leave wrappers behind after
    ``uninstrument()``); the parent interleaves their batches in time so load drifts hit all alike.
    """
    client_batch = install_prebuilt_sdk() if isolated else None
    provider = counting_provider()
    batches: dict[tuple[int, str], Batch] = {}
    entry = "sdk"
    if label == FLOOR.label:
        for index, (name, attributes) in enumerate(convotel_spans()):
            batches[(index, "sdk")] = floor_batch(provider, name, attributes)
    else:
        contender = next((c for c in CONTENDERS if c.label == label), None)
        if contender is not None:
            importlib.import_module(contender.module).OpenAIInstrumentor().instrument(
                tracer_provider=provider
            )
            entry = "client" if client_batch is not None and wraps_client_request() else "sdk"
        for index, scenario in enumerate(SCENARIOS):
            batches[(index, "sdk")] = sdk_batch(scenario)
            if client_batch is not None:
                batches[(index, "client")] = client_batch(scenario)
    for batch in batches.values():
        batch(1)  # warm-up: first-call imports and caches
    print(f"ready {entry}", flush=True)
    for line in sys.stdin:
        index, batch_entry, n = line.split()
        gc.collect()
        gc.disable()
        microseconds = batches[(int(index), batch_entry)](int(n))
        gc.enable()
        print(microseconds, flush=True)


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, contender: Contender, isolated: bool) -> None:
        command = [sys.executable, __file__, "--worker", contender.label]
        if not isolated:
            command.append("--end-to-end")
        self.label = contender.label
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"{contender.label} did not start")
        self.entry = ready[1]

    def time(self, scenario: int, entry: str, n: int) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{scenario} {entry} {n}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def start_workers(isolated: bool) -> list[Worker]:
    workers = []
    for contender in (UNINSTRUMENTED, FLOOR, *CONTENDERS):
        if contender.module:
            try:
                importlib.import_module(contender.module).OpenAIInstrumentor  # noqa: B018
            except Exception as exc:  # noqa: BLE001 - a missing contender is reported, not fatal
                print(f"(skipping {contender.label}: {type(exc).__name__}: {exc})")
                continue
        workers.append(Worker(contender, isolated))
        print(f"  started {contender.label} (entry: {workers[-1].entry})", flush=True)
    return workers


@dataclass
class Results:
    labels: list[str]
    samples: dict[tuple[int, str], list[float]]  # (scenario, label or "none@<entry>") -> per call
    entries: dict[str, str]

    def best(self, scenario: int, key: str) -> float:
        return min(self.samples[(scenario, key)])

    def overhead(self, scenario: int, label: str) -> float:
        return self.best(scenario, label) - self.best(scenario, f"none@{self.entries[label]}")


def measure(rounds: int, isolated: bool) -> Results:
    workers = start_workers(isolated)
    contenders = [w for w in workers if w.label not in (UNINSTRUMENTED.label, FLOOR.label)]
    results = Results([w.label for w in contenders], {}, {w.label: w.entry for w in contenders})
    order = random.Random(0)
    calls = 200 if isolated else 4
    try:
        for _ in range(rounds):
            for index, scenario in enumerate(SCENARIOS):
                n = max(1, calls // 10) if scenario is LONG else calls
                for worker_ in order.sample(workers, len(workers)):
                    if worker_.label == UNINSTRUMENTED.label:
                        for entry in ("sdk", "client") if isolated else ("sdk",):
                            results.samples.setdefault((index, f"none@{entry}"), []).append(
                                worker_.time(index, entry, n)
                            )
                    else:
                        key = worker_.label
                        results.samples.setdefault((index, key), []).append(
                            worker_.time(index, worker_.entry, n)
                        )
            print(".", end="", flush=True)
    finally:
        for worker_ in workers:
            worker_.close()
    print(f"\n({rounds} rounds; thread CPU time per call, the least of the rounds)")
    return results


def report(results: Results) -> None:
    labels = results.labels
    width = 21
    long_index, short_index = SCENARIOS.index(LONG), SCENARIOS.index(SHORT)
    print("\nOverhead per call (instrumented - uninstrumented) as a multiple of the floor")
    print(
        "(floor = start and end one span carrying the attributes convotel records for that call)\n"
    )
    print("scenario".ljust(26) + "".join(label.rjust(width) for label in labels))
    for index, scenario in enumerate(SCENARIOS):
        floor = results.best(index, FLOOR.label)
        cells = "".join(
            f"{results.overhead(index, label) / floor:.2f}x".rjust(width) for label in labels
        )
        print(scenario.name.ljust(26) + cells)
    floor = results.best(0, FLOOR.label)
    per_chunk = {
        label: (results.overhead(long_index, label) - results.overhead(short_index, label))
        / (LONG_STREAM - SHORT_STREAM)
        for label in labels
    }
    cells = "".join(f"{per_chunk[label] / floor:.3f}x".rjust(width) for label in labels)
    print("per streamed chunk".ljust(26) + cells + "   (x the sync chat floor)")
    if "OpenInference" in labels:
        print("\nconvotel overhead / OpenInference overhead (target: at most 0.5)")
        for index, scenario in enumerate(SCENARIOS):
            ratio = results.overhead(index, "convotel") / results.overhead(index, "OpenInference")
            print(f"  {scenario.name:24s} {ratio:.2f}")
        print(
            f"  {'per streamed chunk':24s} {per_chunk['convotel'] / per_chunk['OpenInference']:.2f}"
        )
    print("\nFor orientation only (absolute times depend on the machine and its load):")
    print(
        f"  floor of a sync chat span: {floor:.1f} us;  "
        f"convotel per streamed chunk: {per_chunk['convotel']:.2f} us"
    )
    print(f"  uninstrumented sync chat call: {results.best(0, 'none@sdk'):.1f} us")


def profile(calls: int) -> None:
    """cProfile convotel on the prebuilt SDK: where its time goes for a chat call and a stream."""
    from convotel.openai import OpenAIInstrumentor

    install_prebuilt_sdk()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=counting_provider())
    try:
        for scenario, n in ((SCENARIOS[0], calls), (LONG, max(1, calls // 50))):
            run = sdk_batch(scenario)
            run(5)
            profiler = cProfile.Profile()
            profiler.enable()
            run(n)
            profiler.disable()
            print(
                f"\n=== {scenario.name} x {n}: "
                "convotel, opentelemetry and wrapt functions by own time"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(
                r"convotel|opentelemetry|wrapt", 25
            )
    finally:
        instrumentor.uninstrument()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="time whole SDK calls through the mock transport (needs a quiet machine)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile convotel instead of comparing"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.worker, isolated=not arguments.end_to_end)
    elif arguments.profile:
        profile(5000)
    else:
        mode = (
            "end to end through the mock transport"
            if arguments.end_to_end
            else "isolated (prebuilt SDK answers)"
        )
        print(f"openai {openai.__version__}; mode: {mode}")
        report(measure(arguments.rounds, isolated=not arguments.end_to_end))


if __name__ == "__main__":
    main()
