"""Per-call overhead of convotel-openai, side by side with the other OpenAI instrumentors.

Responses come from an in-process ``httpx2.MockTransport`` (no sockets), their bodies from the
wire-format kit ``convotel.demo.wire``. By default the SDK
answers from responses parsed once through it: the resource methods (``Completions.create``, ...)
and ``client.request()`` are replaced by stubs *before instrumenting*, so the SDK's own
milliseconds of work do not drown the overhead. convotel, OpenLLMetry and the official
instrumentor hook the resource methods; OpenInference hooks ``OpenAI.request()`` and is timed
entering there, with the arguments ``create()`` would pass. ``--end-to-end`` times whole calls
through the transport instead. Streams are timed at two lengths; the difference gives the cost
per chunk. Every instrumentor runs with its defaults (full message content, except the official
OpenTelemetry one), each in its own worker process (bench_harness.py). See benchmarks/README.md.

    python benchmarks/bench_openai.py [--rounds N]    # the table (calls on stubs)
    python benchmarks/bench_openai.py --end-to-end    # whole SDK calls (needs a quiet machine)
    python benchmarks/bench_openai.py --profile       # where convotel's time goes (cProfile)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx2
import openai
from bench_harness import (
    Batch,
    Contender,
    Scenario,
    Suite,
    SuiteResult,
    async_batch,
    main,
    sync_batch,
)

from convotel.demo import wire

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


# --- the in-process OpenAI server -----------------------------------------------------------------


#: The completion carries a fingerprint, the chunks neither fingerprint nor service tier.
COMPLETION = wire.Envelope(
    "chatcmpl-bench", "gpt-4o-mini-2024-07-18", 1731000000, None, system_fingerprint="fp_bench"
)
CHUNK = wire.Envelope("chatcmpl-bench", "gpt-4o-mini-2024-07-18", 1731000000, None)


def _chat_body() -> bytes:
    completion = wire.chat_completion(
        COMPLETION, wire.assistant_message(ANSWER), wire.chat_usage(38, 52)
    )
    return json.dumps(completion).encode()


def _stream_body(chunks: int) -> bytes:
    words = (ANSWER.split(" ") * (chunks // 20 + 1))[: chunks - 2]
    opening = {"role": "assistant", "content": ""}
    return wire.sse_body(wire.text_stream(CHUNK, [" " + w for w in words], opening=opening))


def _embeddings_body() -> bytes:
    vector = [((i * 37) % 100) / 100 for i in range(EMBEDDING_DIMENSIONS)]
    body = wire.embeddings_body(
        [vector, vector], model="text-embedding-3-small", prompt_tokens=8, base64_encoded=True
    )
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
class OpenAIScenario(Scenario):
    endpoint: str = "chat"  # or "embeddings"
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, object]:
        return _key(self.endpoint, self.request)


SCENARIOS = (
    OpenAIScenario("sync chat", "sync", calls=200, sdk_calls=4, request=CHAT_REQUEST),
    OpenAIScenario("async chat", "async", calls=200, sdk_calls=4, request=CHAT_REQUEST),
    OpenAIScenario(
        f"stream, {SHORT_STREAM} chunks",
        "stream",
        calls=200,
        sdk_calls=4,
        request=_stream_request(SHORT_STREAM),
    ),
    OpenAIScenario(  # only for the cost per chunk: not in run_all.py's combined table
        f"stream, {LONG_STREAM} chunks",
        "stream",
        calls=20,
        sdk_calls=1,
        combined=False,
        request=_stream_request(LONG_STREAM),
    ),
    OpenAIScenario(
        "embeddings (2 x 1536)",
        "sync",
        calls=200,
        sdk_calls=4,
        combined=False,
        endpoint="embeddings",
        request={"model": "text-embedding-3-small", "input": ["a cat", "a dog"]},
    ),
)
SHORT, LONG = SCENARIOS[2], SCENARIOS[3]


def _batch(
    scenario: Scenario,
    call: Callable[[], Any],
    async_call: Callable[[], Awaitable[Any]],
    loop: asyncio.AbstractEventLoop,
) -> Batch:
    """Time ``call`` (or ``async_call`` for an async scenario), reading any stream to its end."""
    if scenario.kind == "async":

        async def consume_async() -> None:
            result = await async_call()
            if isinstance(result, openai.AsyncStream):
                async for _ in result:
                    pass

        return async_batch(consume_async, loop)

    def consume() -> None:
        result = call()
        if isinstance(result, openai.Stream):
            for _ in result:
                pass

    return sync_batch(consume)


def sdk_batch(scenario: OpenAIScenario, loop: asyncio.AbstractEventLoop) -> Batch:
    """Calls the way an application makes them: ``client.chat.completions.create(...)``."""

    def resource(client: Any) -> Any:
        return client.chat.completions if scenario.endpoint == "chat" else client.embeddings

    return _batch(
        scenario,
        lambda: resource(SYNC).create(**scenario.request),
        lambda: resource(ASYNC).create(**scenario.request),
        loop,
    )


def client_batch(prebuilt: Prebuilt, scenario: Scenario, loop: asyncio.AbstractEventLoop) -> Batch:
    """Calls entering at ``client.request(...)`` with what ``create`` would have passed."""
    return _batch(
        scenario,
        lambda: SYNC.request(*prebuilt.request_args, **prebuilt.request_kwargs),
        lambda: ASYNC.request(*prebuilt.request_args, **prebuilt.request_kwargs),
        loop,
    )


# --- calls on stubs: the SDK answers with ready-made objects -------------------------------------


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


def install_prebuilt_sdk() -> dict[tuple[str, object], Prebuilt]:
    """Make the SDK answer from memory below every instrumentor's hook; return the answers.

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
        if scenario.kind == "async":
            continue
        seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def recording_request(self: Any, *args: Any, seen: list[Any] = seen, **kwargs: Any) -> Any:
            seen.append((args, kwargs))
            return original_request(self, *args, **kwargs)

        SyncAPIClient.request = recording_request  # type: ignore[method-assign,assignment]
        try:
            resource = SYNC.chat.completions if scenario.endpoint == "chat" else SYNC.embeddings
            response = resource.create(**scenario.request)
            response = list(response) if scenario.kind == "stream" else response
        finally:
            SyncAPIClient.request = original_request  # type: ignore[method-assign]
        ((args, kwargs),) = seen
        prebuilt[scenario.key] = Prebuilt(response, args, kwargs)

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
    return prebuilt


def wraps_client_request() -> bool:
    """Whether the active instrumentor hooks ``OpenAI.request`` rather than the resources."""
    return hasattr(vars(openai.OpenAI).get("request"), "__wrapped__")


class OpenAISuite(Suite):
    adapter = "openai"
    distributions = ("openai",)
    scenarios = SCENARIOS
    contenders = (
        Contender("convotel", "convotel-openai", "convotel.openai", "OpenAIInstrumentor"),
        Contender(
            "OpenInference",
            "openinference-instrumentation-openai",
            "openinference.instrumentation.openai",
            "OpenAIInstrumentor",
        ),
        Contender(
            "OpenLLMetry",
            "opentelemetry-instrumentation-openai",
            "opentelemetry.instrumentation.openai",
            "OpenAIInstrumentor",
        ),
        Contender(
            "OTel official (v2)",
            "opentelemetry-instrumentation-openai-v2",
            "opentelemetry.instrumentation.openai_v2",
            "OpenAIInstrumentor",
        ),
    )
    stubbed: ClassVar[bool] = True
    default_rounds: ClassVar[int] = 30
    #: "client": ``OpenAI.request()``, where OpenInference hooks (the stubs answer there too).
    entries: ClassVar[tuple[str, ...]] = ("sdk", "client")

    def setup(self, stubbed: bool) -> None:
        self.prebuilt = install_prebuilt_sdk() if stubbed else {}
        self.loop = asyncio.new_event_loop()

    def batch(self, scenario: Scenario) -> Batch:
        return self.entry_batch(scenario, "sdk")

    def entry_batch(self, scenario: Scenario, entry: str) -> Batch:
        assert isinstance(scenario, OpenAIScenario)
        if entry == "client":
            return client_batch(self.prebuilt[scenario.key], scenario, self.loop)
        return sdk_batch(scenario, self.loop)

    def entry(self) -> str:
        return "client" if wraps_client_request() else "sdk"

    def report(self, result: SuiteResult) -> None:
        """The table, then the cost per streamed chunk and convotel / OpenInference."""
        super().report(result)
        rows = {row.scenario: row for row in result.rows}
        short, long = rows[SHORT.name].overhead_us, rows[LONG.name].overhead_us
        floor = result.rows[0].floor_us  # sync chat
        per_chunk = {
            label: (long[label] - short[label]) / (LONG_STREAM - SHORT_STREAM)
            for label in result.contenders
            if label in short and label in long
        }
        print(
            f"\nPer streamed chunk ({LONG_STREAM} minus {SHORT_STREAM} chunks, x sync chat floor):"
        )
        for label, microseconds in per_chunk.items():
            print(f"  {label:24s} {microseconds:.2f} µs ({microseconds / floor:.3f}x)")
        ratios = {
            row.scenario: row.overhead_us["convotel"] / row.overhead_us["OpenInference"]
            for row in result.rows
            if {"convotel", "OpenInference"} <= row.overhead_us.keys()
        }
        if {"convotel", "OpenInference"} <= per_chunk.keys():
            ratios["per streamed chunk"] = per_chunk["convotel"] / per_chunk["OpenInference"]
        if ratios:
            print("\nconvotel overhead / OpenInference overhead (target: at most 0.5)")
            for name, ratio in ratios.items():
                print(f"  {name:24s} {ratio:.2f}")


SUITE = OpenAISuite()

if __name__ == "__main__":
    main(SUITE, __file__)
