"""Drive each convotel adapter through its cheapest real path and hand back the finished spans.

``run_adapter(name, config)`` instruments one adapter with ``config`` on a fresh tracer provider,
runs that adapter's representative calls through the real SDK or framework (a chat with a system
prompt, an image and invocation parameters, a streamed chat, a tool call, embeddings, a failed
call, plus what only that adapter records: legacy completions, FIM, retrieval...), uninstruments
and returns the finished spans. Provider answers are the recorded bodies of ``cassettes/<provider>``
served by an in-process ``MockTransport`` (so nothing is matched on the request body), DSPy's own
engine talks to the core's loopback :class:`~convotel.demo.fake_server.FakeLLMServer`.

Every call is configured with the credentials of :data:`SECRETS` the way applications pass them:
API keys (argument and environment), ``Authorization``/``api-key``/``Cookie`` headers as client
defaults and per call, proxy and base-URL credentials, secret query and body extras. A test may
then scan the spans for any of :data:`SECRETS` (:func:`leaked_secrets`).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast
from unittest import mock

import yaml
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig, using_session, using_user

ADAPTERS = ("openai", "mistralai", "llama_index", "dspy")
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
SESSION_ID = "s-reliability"
USER_ID = "u-reliability"

# --- what the calls carry -------------------------------------------------------------------

SYSTEM_PROMPT = "You are a terse geography tutor."
QUESTION = "What is the capital of France?"
IMAGE_URL = "https://images.example/eiffel-tower.png"
#: A base64 image URL of 202 characters (tests set ``base64_image_max_length`` below that).
DATA_IMAGE_URL = "data:image/png;base64," + base64.b64encode(bytes(range(135))).decode()
EMBEDDED_TEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Reports the weather of one city (a tool definition sent to the model).",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# --- the credentials that must never be recorded --------------------------------------------

API_KEY = "sk-convotel-SECRET-api-key-0001"
ENV_API_KEY = "sk-convotel-SECRET-env-key-0002"
BEARER_TOKEN = "convotel-SECRET-bearer-0003"
API_KEY_HEADER = "convotel-SECRET-api-key-header-0004"
COOKIE = "convotel-SECRET-cookie-0005"
PROXY_USER = "convotel-proxy-user-0006"
PROXY_PASSWORD = "convotel-SECRET-proxy-pass-0007"
URL_PASSWORD = "convotel-SECRET-url-pass-0008"
QUERY_SECRET = "convotel-SECRET-query-0009"
BODY_SECRET = "convotel-SECRET-body-0010"
DEFAULT_HEADER_SECRET = "convotel-SECRET-default-header-0011"

PROXY_URL = f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.invalid:3128"
#: Every string that must never appear in a span, an event or a status (the proxy's basic-auth
#: encoding included).
SECRETS: tuple[str, ...] = (
    API_KEY,
    ENV_API_KEY,
    BEARER_TOKEN,
    API_KEY_HEADER,
    COOKIE,
    PROXY_USER,
    PROXY_PASSWORD,
    URL_PASSWORD,
    QUERY_SECRET,
    BODY_SECRET,
    DEFAULT_HEADER_SECRET,
    base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode(),
    "SECRET",
)
SECRET_HEADERS = {
    "Authorization": f"Bearer {BEARER_TOKEN}",
    "api-key": API_KEY_HEADER,
    "Cookie": f"session={COOKIE}",
    "Proxy-Authorization": f"Basic {PROXY_PASSWORD}",
}
DEFAULT_HEADERS = {"X-Api-Key": DEFAULT_HEADER_SECRET, "Cookie": f"default={COOKIE}"}
SECRET_ENVIRONMENT = {
    "OPENAI_API_KEY": ENV_API_KEY,
    "AZURE_OPENAI_API_KEY": ENV_API_KEY,
    "MISTRAL_API_KEY": ENV_API_KEY,
    **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"), PROXY_URL),
    **{name.lower(): PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@contextmanager
def secret_environment() -> Iterator[None]:
    """API keys and proxy credentials in the environment, as deployments set them."""
    with mock.patch.dict(os.environ, SECRET_ENVIRONMENT):
        yield


def leaked_secrets(spans: Sequence[ReadableSpan]) -> list[str]:
    """``"<span>: <where>"`` for every secret found in any recorded text of ``spans``."""
    found = []
    for span in spans:
        for where, text in recorded_texts(span):
            found += [f"{span.name}: {where} holds {s!r}" for s in SECRETS if s in text]
    return found


def recorded_texts(span: ReadableSpan) -> Iterator[tuple[str, str]]:
    """Every text a span exports: name, status, attributes, events and their attributes."""
    yield "name", span.name
    yield "status", span.status.description or ""
    for key, value in (span.attributes or {}).items():
        yield key, str(value)
    for event in span.events:
        yield f"event {event.name}", event.name
        for key, value in (event.attributes or {}).items():
            yield f"event {event.name} {key}", str(value)


# --- recorded provider answers --------------------------------------------------------------


@cache
def cassette_answers(path: str) -> tuple[tuple[int, dict[str, str], bytes], ...]:
    """Status, headers and body of each response recorded in ``cassettes/<path>.yaml``."""
    recorded = yaml.safe_load((CASSETTES / f"{path}.yaml").read_text())
    answers = []
    for interaction in recorded["interactions"]:
        response = interaction["response"]
        headers = {
            name: values[0]
            for name, values in response["headers"].items()
            if name.lower() in ("content-type", "x-request-id", "mistral-correlation-id")
        }
        body = response["body"]["string"]
        answers.append(
            (response["status"]["code"], headers, body.encode() if isinstance(body, str) else body)
        )
    return tuple(answers)


Route = Callable[[str, Mapping[str, Any]], str]

#: Every request the mock transports answered (method, URL, headers), oldest first.
SENT_REQUESTS: list[tuple[str, str, dict[str, str]]] = []


def mock_http_client(httpx_module: Any, route: Route, *, is_async: bool = False) -> Any:
    """An HTTP client configured with proxy credentials whose requests a ``MockTransport``
    answers with the cassette ``route(path, json_body)`` names (``"name#i"``: its i-th answer)."""

    def answer(request: Any) -> Any:
        SENT_REQUESTS.append((request.method, str(request.url), dict(request.headers)))
        body = json.loads(request.content or b"{}")
        name, _, index = route(request.url.path, body).partition("#")
        status, headers, content = cassette_answers(name)[int(index or 0)]
        return httpx_module.Response(status, headers=headers, content=content)

    transport = httpx_module.MockTransport(answer)
    client_class = httpx_module.AsyncClient if is_async else httpx_module.Client
    return client_class(proxy=PROXY_URL, mounts={"all://": transport})


# --- the adapters' calls ------------------------------------------------------------------


def run_adapter(adapter: str, config: TraceConfig | None = None) -> tuple[ReadableSpan, ...]:
    """Instrument ``adapter`` with ``config``, run its representative calls in one session and
    return the finished spans (the adapter is uninstrumented again whatever happens)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor, calls = _DRIVERS[adapter]()
    instrumentor.instrument(tracer_provider=provider, config=config or TraceConfig())
    try:
        with secret_environment(), using_session(SESSION_ID), using_user(USER_ID):
            calls()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return exporter.get_finished_spans()


Driver = Callable[[], tuple[Any, Callable[[], None]]]


def _user_message_parts() -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        {"type": "image_url", "image_url": {"url": DATA_IMAGE_URL}},
    ]


def openai_httpx() -> Any:
    """The HTTP library the installed OpenAI SDK sends through (httpx2 for openai >= 3)."""
    import openai._base_client

    return getattr(openai._base_client, "httpx2", None) or vars(openai._base_client)["httpx"]


def _openai_route(path: str, body: Mapping[str, Any]) -> str:
    if path.endswith("/embeddings"):
        return "openai/embeddings"
    if path.endswith("/completions") and "/chat/" not in path:
        return "openai/completions_legacy"
    if body.get("model") == "gpt-unauthorized":
        return "openai/chat_400"
    if body.get("stream"):
        return "openai/chat_stream_usage"
    if body.get("tools"):
        return "openai/chat_tools"
    return "openai/chat_basic"


def openai_client(route: Route = _openai_route) -> Any:
    """An OpenAI client with secrets in every place the SDK takes them, answering from cassettes."""
    import openai

    return openai.OpenAI(
        api_key=API_KEY,
        base_url=f"https://convotel:{URL_PASSWORD}@api.openai.example/v1",
        default_headers=DEFAULT_HEADERS,
        default_query={"key": QUERY_SECRET},
        max_retries=0,
        http_client=mock_http_client(openai_httpx(), route),
    )


def _openai() -> tuple[Any, Callable[[], None]]:
    import openai

    from convotel.openai import OpenAIInstrumentor

    def calls() -> None:
        client = openai_client()
        secret_extras: dict[str, Any] = {
            "extra_headers": SECRET_HEADERS,
            "extra_query": {"api-key": QUERY_SECRET},
            "extra_body": {"client_secret": BODY_SECRET},
            "timeout": 5,
        }
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _user_message_parts()},
        ]
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, max_tokens=50, temperature=0.2, **secret_extras
        )
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **secret_extras,
        )
        for _ in stream:
            pass
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What is the weather in Paris and Tokyo?"}],
            tools=[WEATHER_TOOL],
            **secret_extras,
        )
        client.embeddings.create(
            model="text-embedding-3-small", input=EMBEDDED_TEXTS, **secret_extras
        )
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", **secret_extras
        )
        with contextlib.suppress(openai.BadRequestError):
            client.chat.completions.create(
                model="gpt-unauthorized", messages=messages, **secret_extras
            )
        azure = openai.AzureOpenAI(
            azure_endpoint="https://convotel-test.openai.azure.com",
            api_version="2024-10-21",
            api_key=API_KEY,
            default_headers=DEFAULT_HEADERS,
            http_client=mock_http_client(openai_httpx(), lambda path, body: "openai/azure_chat"),
        )
        azure.chat.completions.create(model="gpt-4o-deploy", messages=messages, **secret_extras)

    return OpenAIInstrumentor(), calls


def mistral_httpx() -> Any:
    """The HTTP library the installed Mistral SDK sends through."""
    from mistralai.client import basesdk

    return vars(basesdk).get("httpx") or vars(basesdk)["httpx2"]


def _mistral_route(path: str, body: Mapping[str, Any]) -> str:
    if path.endswith("/embeddings"):
        return "mistralai/embeddings_create"
    if path.endswith("/fim/completions"):
        return "mistralai/fim_complete"
    if body.get("model") == "mistral-unauthorized":
        return "mistralai/error_401_unauthorized"
    if body.get("stream"):
        return "mistralai/chat_stream"
    if body.get("tools"):
        return "mistralai/chat_complete_tools"
    return "mistralai/chat_complete"


def _mistralai() -> tuple[Any, Callable[[], None]]:
    from mistralai.client import Mistral, errors

    from convotel.mistralai import MistralAIInstrumentor

    def calls() -> None:
        client = Mistral(
            api_key=API_KEY,
            server_url=f"https://convotel:{URL_PASSWORD}@api.mistral.example",
            client=mock_http_client(mistral_httpx(), _mistral_route),
        )
        secret_extras: dict[str, Any] = {"http_headers": SECRET_HEADERS, "timeout_ms": 5000}
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _user_message_parts()},
        ]
        client.chat.complete(
            model="mistral-small-latest",
            messages=messages,
            temperature=0.2,
            max_tokens=50,
            **secret_extras,
        )
        for _ in client.chat.stream(
            model="mistral-small-latest", messages=messages, **secret_extras
        ):
            pass
        client.chat.complete(
            model="mistral-small-latest",
            messages=cast(Any, [{"role": "user", "content": "What is the weather in Paris?"}]),
            tools=cast(Any, [WEATHER_TOOL]),
            tool_choice="auto",
            **secret_extras,
        )
        client.embeddings.create(model="mistral-embed", inputs=EMBEDDED_TEXTS, **secret_extras)
        client.fim.complete(
            model="codestral-latest", prompt="def add(a, b):", suffix="\n", **secret_extras
        )
        with contextlib.suppress(errors.MistralError):
            client.chat.complete(model="mistral-unauthorized", messages=messages, **secret_extras)

    return MistralAIInstrumentor(), calls


@cache
def llama_index_models() -> tuple[type, type]:
    """A LlamaIndex chat model (the demo's, over an OpenAI client) and an embedding model that
    hold their credentials the way ``llama_index.llms.openai`` and friends do."""
    from llama_index.core.embeddings import MockEmbedding

    from convotel.demo.llama_index_llm import OpenAIClientLLM

    class KeyedClientLLM(OpenAIClientLLM):
        api_key: str
        api_base: str
        default_headers: dict[str, str]
        additional_kwargs: dict[str, Any]

    class KeyedEmbedding(MockEmbedding):
        api_key: str
        default_headers: dict[str, str]

        def _get_text_embedding(self, text: str) -> list[float]:
            return _letter_counts([text])[0]  # distinct vectors: retrieval is deterministic

        def _get_query_embedding(self, query: str) -> list[float]:
            return _letter_counts([query])[0]

    return KeyedClientLLM, KeyedEmbedding


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny in {city}"


def _llama_index() -> tuple[Any, Callable[[], None]]:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.base.llms.types import ChatMessage, MessageRole
    from llama_index.core.tools import FunctionTool

    from convotel.llama_index import LlamaIndexInstrumentor

    def llama_route(path: str, body: Mapping[str, Any]) -> str:
        return "llama_index/stream_chat" if body.get("stream") else "llama_index/chat"

    def calls() -> None:
        llm_class, embedding_class = llama_index_models()
        llm = llm_class(
            openai_client(llama_route),
            model="gpt-4o-mini",
            api_key=API_KEY,
            api_base=f"https://convotel:{URL_PASSWORD}@api.openai.example/v1",
            default_headers={**DEFAULT_HEADERS, **SECRET_HEADERS},
            additional_kwargs={"temperature": 0.2, "extra_headers": SECRET_HEADERS},
        )
        embedding = embedding_class(embed_dim=5, api_key=API_KEY, default_headers=SECRET_HEADERS)
        messages = [
            ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT),
            ChatMessage(role=MessageRole.USER, content=QUESTION),
        ]
        llm.chat(messages, tools=[WEATHER_TOOL])
        for _ in llm.stream_chat(messages):
            pass
        FunctionTool.from_defaults(get_weather).call(city="Paris")
        embedding.get_text_embedding_batch(EMBEDDED_TEXTS)
        index = VectorStoreIndex.from_documents(
            [Document(text=text, id_=f"doc-{i}") for i, text in enumerate(EMBEDDED_TEXTS)],
            embed_model=embedding,
        )
        index.as_query_engine(llm=llm, similarity_top_k=1).query(QUESTION)

    return LlamaIndexInstrumentor(), calls


_server_lock = threading.Lock()
_servers: list[Any] = []


def fake_llm_server() -> Any:
    """The process's loopback OpenAI-format server (started on first use)."""
    from convotel.demo.fake_server import FakeLLMServer

    with _server_lock:
        if not _servers:
            server = FakeLLMServer().start()
            atexit.register(server.stop)
            _servers.append(server)
        return _servers[0]


@cache
def dspy_tutor() -> type:
    """A DSPy module asking the configured LM directly (the loopback's replies are free text)."""
    import dspy

    class AskTutor(dspy.Module):  # type: ignore[misc]
        def forward(self, question: str) -> dspy.Prediction:
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": [{"type": "text", "text": question}, *IMAGE_PARTS]},
            ]
            return dspy.Prediction(answer=dspy.settings.lm(messages=messages)[0])

    return AskTutor


def _dspy() -> tuple[Any, Callable[[], None]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    from convotel.dspy import DSPyInstrumentor

    def calls() -> None:
        server = fake_llm_server()
        lm = dspy.LM(
            "openai/gpt-4o-mini",
            api_base=server.openai_base_url,
            api_key=API_KEY,
            cache=False,
            num_retries=0,
            temperature=0.2,
            max_tokens=64,
            extra_headers=SECRET_HEADERS,
            headers=DEFAULT_HEADERS,
        )
        embedder = dspy.Embedder(
            "openai/text-embedding-3-small",
            api_base=server.openai_base_url,
            api_key=API_KEY,
            caching=False,
            dimensions=4,
            extra_headers=SECRET_HEADERS,
        )
        # DSPy 3.4 deprecates OpenAI-style messages= (convotel records them and lm15 requests).
        with dspy.context(lm=lm), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Passing OpenAI-style", DeprecationWarning)
            dspy_tutor()()(question=QUESTION)
            lm(
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[WEATHER_TOOL],
            )
            dspy.Tool(get_weather)(city="Paris")
            embedder(EMBEDDED_TEXTS)
            retriever = dspy.retrievers.Embeddings(
                corpus=EMBEDDED_TEXTS, embedder=dspy.Embedder(_letter_counts), k=1
            )
            retriever(QUESTION)

    return DSPyInstrumentor(), calls


IMAGE_PARTS = _user_message_parts()[1:]


def _letter_counts(texts: list[str]) -> list[list[float]]:
    """A deterministic local embedding (counts of a few letters), for DSPy's retriever."""
    return [[float(text.lower().count(letter)) for letter in "aeiou"] for text in texts]


_DRIVERS: dict[str, Driver] = {
    "openai": _openai,
    "mistralai": _mistralai,
    "llama_index": _llama_index,
    "dspy": _dspy,
}
