"""Per-call overhead of convotel-mistralai, side by side with the other Mistral AI instrumentors.

The real ``Mistral`` client answers from the wire bodies of ``cassettes/mistralai/`` (a chat
completion; the chat stream stretched to ``STREAM_CHUNKS`` chunks). For the timed calls,
``Chat.complete``/``complete_async``/``stream`` are replaced *before instrumenting* by stubs that
return the SDK's own parsed response and a real ``EventStream`` over the recorded SSE bytes (its
per-chunk pydantic decoding cached), so instrumented minus uninstrumented is exactly what a tracer
adds. The uninstrumented call through the whole SDK and an in-process mock transport is timed
apart, for the "x call" scale. Each contender runs in its own worker process (bench_harness.py).

    python benchmarks/bench_mistralai.py [--rounds N]
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import yaml
from bench_harness import Batch, Contender, Scenario, Suite, async_batch, main, sync_batch
from mistralai.client import Mistral, basesdk, models
from mistralai.client.chat import Chat
from mistralai.client.utils.eventstreaming import EventStream
from mistralai.client.utils.unmarshal_json_response import unmarshal_json_response

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "mistralai"
STREAM_CHUNKS = 20  # events the application iterates: role chunk, content chunks, usage chunk
MODEL = "mistral-small-latest"
MESSAGES: Any = [
    {"role": "system", "content": "You are a helpful assistant for a travel agency."},
    {"role": "user", "content": "Say hello in French."},
]
http: Any = vars(basesdk)["httpx"]  # httpx2 for mistralai 3.x, httpx for 2.x


def recorded_body(name: str) -> str:
    cassette = yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())
    return str(cassette["interactions"][0]["response"]["body"]["string"])


def stream_body() -> bytes:
    """The recorded chat stream with its first content chunk repeated to ``STREAM_CHUNKS``."""
    events = [block for block in recorded_body("chat_stream").split("\n\n") if block.strip()]
    assert events[-1] == "data: [DONE]"
    first, content, last = events[0], events[1], events[-2]
    chunks = [first, *[content] * (STREAM_CHUNKS - 2), last, "data: [DONE]", ""]
    return "\n\n".join(chunks).encode()


CHAT_BODY = recorded_body("chat_complete").encode()
STREAM_BODY = stream_body()


def answer(request: Any) -> Any:
    if json.loads(request.content).get("stream"):
        return http.Response(
            200, headers={"content-type": "text/event-stream"}, content=STREAM_BODY
        )
    return http.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)


def install_stubs() -> None:
    """``Chat.complete``/``complete_async``/``stream`` answer at once with the SDK's own objects."""
    response = http.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)
    parsed = unmarshal_json_response(models.ChatCompletionResponse, response)
    decoded: dict[str, Any] = {}

    def complete(self: Chat, **kwargs: Any) -> Any:
        return parsed

    async def complete_async(self: Chat, **kwargs: Any) -> Any:
        return parsed

    def stream(self: Chat, **kwargs: Any) -> Any:
        sse = http.Response(200, headers={"content-type": "text/event-stream"}, content=STREAM_BODY)

        def decode(raw: str) -> Any:
            if raw not in decoded:
                decoded[raw] = unmarshal_json_response(models.CompletionEvent, sse, raw)
            return decoded[raw]

        return EventStream(sse, decode, sentinel="[DONE]")

    Chat.complete = complete  # type: ignore[method-assign]
    Chat.complete_async = complete_async  # type: ignore[method-assign]
    Chat.stream = stream  # type: ignore[method-assign]


class MistralSuite(Suite):
    adapter = "mistralai"
    distributions = ("mistralai",)
    scenarios = (
        Scenario("chat.complete", "sync", calls=100, sdk_calls=4),
        Scenario("chat.complete_async", "async", calls=100, sdk_calls=4),
        Scenario(f"chat.stream ({STREAM_CHUNKS} chunks)", "stream", calls=40, sdk_calls=2),
    )
    contenders = (
        Contender("convotel", "convotel-mistralai", "convotel.mistralai", "MistralAIInstrumentor"),
        Contender(
            "OpenInference",
            "openinference-instrumentation-mistralai",
            "openinference.instrumentation.mistralai",
            "MistralAIInstrumentor",
        ),
        Contender(
            "OpenLLMetry",
            "opentelemetry-instrumentation-mistralai",
            "opentelemetry.instrumentation.mistralai",
            "MistralAiInstrumentor",
        ),
    )
    stubbed: ClassVar[bool] = True

    def setup(self, stubbed: bool) -> None:
        if stubbed:
            install_stubs()
        transport = http.MockTransport(answer)
        self.client = Mistral(
            api_key="bench-key",
            client=http.Client(transport=transport),
            async_client=http.AsyncClient(transport=transport),
        )
        self.loop = asyncio.new_event_loop()

    def batch(self, scenario: Scenario) -> Batch:
        chat = self.client.chat
        if scenario.kind == "async":

            async def complete_async() -> None:
                response = await chat.complete_async(
                    model=MODEL, messages=MESSAGES, temperature=0.2
                )
                assert response.choices

            return async_batch(complete_async, self.loop)
        if scenario.kind == "stream":

            def stream() -> None:
                with chat.stream(model=MODEL, messages=MESSAGES) as events:
                    assert sum(1 for _ in events) == STREAM_CHUNKS

            return sync_batch(stream)

        def complete() -> None:
            assert chat.complete(model=MODEL, messages=MESSAGES, temperature=0.2).choices

        return sync_batch(complete)


SUITE = MistralSuite()

if __name__ == "__main__":
    main(SUITE, __file__)
