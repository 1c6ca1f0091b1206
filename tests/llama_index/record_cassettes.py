"""Write the LlamaIndex cassettes from hand-written OpenAI wire-format responses.

No network is used: ``llama-index-llms-openai`` / ``llama-index-embeddings-openai`` talk to an
``httpx.MockTransport`` that answers with the responses below (JSON bodies as in the OpenAI API
reference, streams as ``text/event-stream`` ``data:`` lines ending in ``data: [DONE]``; built with
the wire-format kit ``convotel.demo.wire``), and vcrpy records the exact requests the SDK sends.
The tests replay these files with ``record_mode="none"`` through the SDK's default transport.

Run: ``python tests/llama_index/record_cassettes.py`` (needs llama-index-llms-openai,
llama-index-embeddings-openai and vcrpy).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import vcr  # type: ignore[import-untyped]
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]
from llama_index.llms.openai import OpenAI

from convotel.demo import wire

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "llama_index"

# The tests build their clients with exactly these settings (see conftest.py).
MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
API_KEY = "sk-test-not-a-real-key"
LLM_SETTINGS: dict[str, Any] = {
    "model": MODEL,
    "api_key": API_KEY,
    "max_retries": 0,
    "additional_kwargs": {"stream_options": {"include_usage": True}},
}
EMBED_SETTINGS: dict[str, Any] = {"model": EMBED_MODEL, "api_key": API_KEY, "max_retries": 0}
DOCUMENTS = [
    ("doc-paris", "Paris is the capital of France."),
    ("doc-berlin", "Berlin is the capital of Germany."),
]
QUESTION = "What is the capital of France?"
CREATED = 1732550400
FINGERPRINT = "fp_0ba0d124f1"

Handler = Callable[[httpx.Request], httpx.Response]


usage = wire.chat_usage


def envelope(completion_id: str) -> wire.Envelope:
    return wire.Envelope(
        completion_id, "gpt-4o-mini-2024-07-18", CREATED, None, system_fingerprint=FINGERPRINT
    )


def chat_completion(completion_id: str, content: str, tokens: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, "refusal": None}
    return wire.chat_completion(envelope(completion_id), message, tokens)


def text_stream(completion_id: str, pieces: list[str], tokens: dict[str, Any]) -> list[wire.Event]:
    """A streamed answer asked for usage, ending with ``[DONE]``."""
    return wire.text_stream(envelope(completion_id), pieces, usage=tokens)


sse = wire.sse_body


def json_response(status: int, body: Any, request_id: str) -> httpx.Response:
    return httpx.Response(
        status,
        headers={
            "content-type": "application/json",
            "x-request-id": request_id,
            "openai-processing-ms": "212",
        },
        content=json.dumps(body).encode(),
    )


def stream_response(body: bytes, request_id: str) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8", "x-request-id": request_id},
        content=body,
    )


def fake_vector(text: str) -> list[float]:
    """A deterministic 4-dimensional vector; texts about France point the same way."""
    if "France" in text or "Paris" in text:
        return [0.9, 0.1, 0.0, 0.1]
    return [0.1, 0.9, 0.1, 0.0]


def embeddings_response(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    tokens = sum(len(text.split()) for text in inputs)
    payload = wire.embeddings_body(
        [fake_vector(text) for text in inputs],
        model=EMBED_MODEL,
        prompt_tokens=tokens,
        base64_encoded=body.get("encoding_format") == "base64",
    )
    return json_response(200, payload, f"req_embed_{len(inputs)}")


def answer_with(*responses: Handler) -> Handler:
    """Answer embeddings requests by content and chat requests with ``responses`` in order."""
    queue: Iterator[Handler] = iter(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/embeddings"):
            return embeddings_response(request)
        return next(queue)(request)

    return handle


def keep_content_type_only(request: Any) -> Any:
    """Drop every request header but the content type (no keys, no client fingerprints)."""
    request.headers = {"content-type": request.headers.get("content-type", "application/json")}
    return request


def record(
    name: str,
    handler: Handler,
    scenario: Callable[[OpenAI, OpenAIEmbedding], Any],
    fails: bool = False,
) -> None:
    path = CASSETTES / f"{name}.yaml"
    path.unlink(missing_ok=True)
    transport = httpx.MockTransport(handler)
    llm = OpenAI(
        **LLM_SETTINGS,
        http_client=httpx.Client(transport=transport),
        async_http_client=httpx.AsyncClient(transport=transport),
    )
    embed = OpenAIEmbedding(
        **EMBED_SETTINGS,
        http_client=httpx.Client(transport=transport),
        async_http_client=httpx.AsyncClient(transport=transport),
    )
    recorder = vcr.VCR(
        record_mode="all",
        before_record_request=keep_content_type_only,
        decode_compressed_response=True,
    )
    with recorder.use_cassette(str(path)):
        try:
            result = scenario(llm, embed)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except Exception as exc:
            if not fails:
                raise
            print(f"{name}: the SDK raised {type(exc).__name__}, as intended")
    print(f"wrote {path.relative_to(CASSETTES.parents[1])}")


def ask(llm: OpenAI, _: OpenAIEmbedding) -> None:
    llm.chat([ChatMessage(role="user", content=QUESTION)])


def stream_ask(llm: OpenAI, _: OpenAIEmbedding) -> None:
    for _chunk in llm.stream_chat([ChatMessage(role="user", content=QUESTION)]):
        pass


def build_index(embed: OpenAIEmbedding) -> VectorStoreIndex:
    documents = [Document(text=text, id_=doc_id) for doc_id, text in DOCUMENTS]
    return VectorStoreIndex.from_documents(documents, embed_model=embed)


def query(llm: OpenAI, embed: OpenAIEmbedding) -> None:
    Settings.llm = llm
    build_index(embed).as_query_engine(llm=llm, similarity_top_k=1).query(QUESTION)


def stream_query(llm: OpenAI, embed: OpenAIEmbedding) -> None:
    engine = build_index(embed).as_query_engine(llm=llm, similarity_top_k=1, streaming=True)
    response = engine.query(QUESTION)
    assert isinstance(response, StreamingResponse)
    assert isinstance(response.response_gen, Iterator)
    for _token in response.response_gen:
        pass


def get_weather(city: str) -> str:
    """Report the current weather in a city."""
    return f"Sunny and 24 degrees in {city}."


async def run_agent(llm: OpenAI, _: OpenAIEmbedding) -> None:
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(get_weather)],
        llm=llm,
        system_prompt="You answer weather questions with the get_weather tool.",
    )
    await agent.run("What is the weather in Paris?")


def tool_call_stream() -> bytes:
    agent = envelope("chatcmpl-agent-1")
    opening = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [wire.tool_call_head(0, "call_weather_1", "get_weather")],
    }
    arguments = ['{"ci', 'ty": "Pa', 'ris"}']
    events: list[wire.Event] = [wire.chat_chunk(agent, opening, null_usage=True)]
    events += [
        wire.chat_chunk(agent, {"tool_calls": [wire.tool_call_fragment(0, part)]}, null_usage=True)
        for part in arguments
    ]
    events.append(wire.chat_chunk(agent, {}, finish_reason="tool_calls", null_usage=True))
    events += [wire.usage_chunk(agent, usage(84, 15)), wire.DONE]
    return sse(events)


def main() -> None:
    CASSETTES.mkdir(parents=True, exist_ok=True)
    answer = chat_completion("chatcmpl-chat-1", "The capital of France is Paris.", usage(14, 7))
    record("chat", answer_with(lambda _: json_response(200, answer, "req_chat_1")), ask)
    streamed = sse(
        text_stream("chatcmpl-stream-1", ["The capital", " of France", " is Paris."], usage(14, 7))
    )
    record(
        "stream_chat", answer_with(lambda _: stream_response(streamed, "req_stream_1")), stream_ask
    )
    error = wire.error_body(
        "This model's maximum context length is 128000 tokens.",
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    record(
        "chat_http_error",
        answer_with(lambda _: json_response(400, error, "req_err_1")),
        ask,
        fails=True,
    )
    cut = sse(text_stream("chatcmpl-cut-1", ["The capital"], usage(14, 2))[:2])
    malformed = (
        cut + b'data: {"id": "chatcmpl-cut-1", "choices": [{"index": 0, "delta": {"content": \n\n'
    )
    record(
        "stream_chat_malformed",
        answer_with(lambda _: stream_response(malformed, "req_bad_1")),
        stream_ask,
        fails=True,
    )
    rag = chat_completion(
        "chatcmpl-rag-1", "Paris is the capital of France.", usage(152, 8, cached=64)
    )
    record("query_engine", answer_with(lambda _: json_response(200, rag, "req_rag_1")), query)
    rag_stream = sse(
        text_stream("chatcmpl-rag-2", ["Paris is", " the capital", " of France."], usage(152, 8))
    )
    record(
        "query_engine_stream",
        answer_with(lambda _: stream_response(rag_stream, "req_rag_2")),
        stream_query,
    )
    final = sse(
        text_stream(
            "chatcmpl-agent-2", ["It is sunny and", " 24 degrees in Paris."], usage(121, 11)
        )
    )
    record(
        "agent_tool_call",
        answer_with(
            lambda _: stream_response(tool_call_stream(), "req_agent_1"),
            lambda _: stream_response(final, "req_agent_2"),
        ),
        run_agent,
    )


if __name__ == "__main__":
    main()
