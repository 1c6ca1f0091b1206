"""Drivers for the fault suite: the same model call through each instrumented SDK's public API.

A driver makes one chat call against a :class:`~convotel.demo.fake_server.FakeLLMServer` in the
shapes the suite needs (sync and async, whole or streamed), with a fault header, and turns what
the application receives into plain data two runs can compare. Its SDK retries fast (tiny
``retry-after-ms``, one retry) and times out after the client timeout it is given.

:class:`RaiseRecorder` wraps the SDK method just below the one the instrumentor wraps (and the
streams it returns), so a test can check that the exception the caller got *is* the one the SDK
raised. :class:`SpanLifecycle` tells which started spans have not ended.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

# Before DSPy/LiteLLM are imported: no cost-map download, DSPy's disk cache out of the home dir.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
if "DSPY_CACHEDIR" not in os.environ:
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="convotel-faults-dspy-")
    atexit.register(shutil.rmtree, os.environ["DSPY_CACHEDIR"], ignore_errors=True)

import dspy  # type: ignore[import-untyped]
import httpx2
import openai
import wrapt
from llama_index.core.base.llms.types import (
    ChatMessage,
    MessageRole,
)
from mistralai.client import Mistral
from mistralai.client.utils import BackoffStrategy, RetryConfig
from opentelemetry.context import Context
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from convotel.demo.fake_server import FAULT_HEADER, FakeLLMServer
from convotel.demo.llama_index_llm import OpenAIClientLLM
from convotel.dspy import DSPyInstrumentor
from convotel.llama_index import LlamaIndexInstrumentor
from convotel.mistralai import MistralAIInstrumentor
from convotel.openai import OpenAIInstrumentor
from convotel.spans import ObjectProxy

QUESTION = "What can you help me with?"


# --- what the SDK raised --------------------------------------------------------------------


@dataclass(frozen=True)
class Boundary:
    """An SDK method (``Class.method``) or module function the recorder wraps."""

    module: str
    name: str
    is_async: bool = False


class RaiseRecorder:
    """Records every exception leaving its boundaries, or the streams they return.

    Installed before an instrumentor (so the instrumentor's wrapper is outside it) and removed
    after it; the recorded exception is the one the SDK raised into the instrumentation.
    """

    def __init__(self, boundaries: Sequence[Boundary]) -> None:
        self.boundaries = boundaries
        self.raised: list[BaseException] = []
        self._originals: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        for boundary in self.boundaries:
            owner: Any = importlib.import_module(boundary.module)
            *path, attribute = boundary.name.split(".")
            for part in path:
                owner = getattr(owner, part)
            self._originals.append((owner, attribute, vars(owner)[attribute]))
            wrapper = self._async_wrapper if boundary.is_async else self._sync_wrapper
            wrapt.wrap_object(owner, attribute, wrapt.FunctionWrapper, (wrapper,))

    def uninstall(self) -> None:
        while self._originals:
            owner, attribute, original = self._originals.pop()
            setattr(owner, attribute, original)

    def saw(self, exc: BaseException) -> None:
        self.raised.append(exc)

    def _sync_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            self.saw(exc)
            raise
        return self._watched(result)

    async def _async_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            self.saw(exc)
            raise
        return self._watched(result)

    def _watched(self, result: Any) -> Any:
        if hasattr(result, "__anext__"):
            return RecordingAsyncStream(result, self)
        if hasattr(result, "__next__"):
            return RecordingStream(result, self)
        return result


class RecordingStream(ObjectProxy):
    """A transparent stream proxy recording the exceptions its iteration raises."""

    def __init__(self, stream: Any, recorder: RaiseRecorder) -> None:
        super().__init__(stream)
        self._self_recorder = recorder

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.__wrapped__)
        except StopIteration:
            raise
        except BaseException as exc:
            self._self_recorder.saw(exc)
            raise

    def __enter__(self) -> RecordingStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)


class RecordingAsyncStream(ObjectProxy):
    """The asynchronous :class:`RecordingStream`."""

    def __init__(self, stream: Any, recorder: RaiseRecorder) -> None:
        super().__init__(stream)
        self._self_recorder = recorder

    def __aiter__(self) -> RecordingAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._self_recorder.saw(exc)
            raise

    async def __aenter__(self) -> RecordingAsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc_info)


# --- which spans are still open -------------------------------------------------------------


class SpanLifecycle(SpanProcessor):
    """Tracks started spans until they end (thread-safe)."""

    def __init__(self) -> None:
        self._open: dict[int, str] = {}
        self._changed = threading.Condition()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        with self._changed:
            self._open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        with self._changed:
            if span.context is not None:
                self._open.pop(span.context.span_id, None)
            self._changed.notify_all()

    def open_spans(self) -> list[str]:
        with self._changed:
            return sorted(self._open.values())

    def wait_all_ended(self, timeout: float) -> list[str]:
        """Wait until every started span has ended; returns the names of those still open."""
        with self._changed:
            self._changed.wait_for(lambda: not self._open, timeout)
            return sorted(self._open.values())


# --- drivers --------------------------------------------------------------------------------


@contextmanager
def all_instrumented(provider: TracerProvider) -> Iterator[None]:
    """The four convotel instrumentors on ``provider``; undone in reverse order afterwards."""
    instrumentors = [
        OpenAIInstrumentor(),
        MistralAIInstrumentor(),
        LlamaIndexInstrumentor(),
        DSPyInstrumentor(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        for instrumentor in reversed(instrumentors):
            instrumentor.uninstrument()


class Driver(ABC):
    """One SDK driven through its public API against a running fake server."""

    name: ClassVar[str]
    #: The model asked for (and recorded on the span).
    model: ClassVar[str] = "gpt-4o-mini"
    #: What the recorder wraps: the SDK methods right below the instrumented ones.
    boundaries: ClassVar[tuple[Boundary, ...]]
    #: ``retry-after-ms`` that makes the SDK retry without a noticeable sleep.
    retry_after_ms: ClassVar[int] = 1
    #: Failures in a row that exhaust the SDK's retries.
    failures_to_exhaust: ClassVar[int] = 2
    #: The SDK bounds retries by time, not count (the number of attempts may vary).
    retries_by_time: ClassVar[bool] = False
    #: Stream spans record ``convotel.stream.outcome`` (the span ends with the stream).
    proxies_streams: ClassVar[bool] = True
    #: Async streams are async generators: asyncio finalizes a dropped one in a task of its own
    #: (its span ends then, not during ``gc.collect()``).
    streams_are_generators: ClassVar[bool] = False
    #: The instrumented span records each retry (``http.request.resend_count``).
    records_retries: ClassVar[bool] = False

    def __init__(self, server: FakeLLMServer, timeout: float) -> None:
        self.server = server
        #: The client timeout in seconds (each SDK's own setting).
        self.timeout = timeout

    @abstractmethod
    def instrumentor(self) -> BaseInstrumentor: ...

    @abstractmethod
    def call(self, fault: str | None) -> object:
        """One whole call; returns what the application got, as plain data."""

    @abstractmethod
    async def acall(self, fault: str | None) -> object: ...

    @abstractmethod
    def stream(self, fault: str | None) -> Iterator[Any]:
        """The stream object the SDK hands the application (iterated by the caller)."""

    @abstractmethod
    async def astream(self, fault: str | None) -> AsyncIterator[Any]: ...

    @abstractmethod
    def chunk(self, item: Any) -> object:
        """Plain data of one streamed item."""

    @abstractmethod
    async def close(self) -> None:
        """Release the clients."""


def _headers(fault: str | None) -> dict[str, str]:
    return {FAULT_HEADER: fault} if fault else {}


def _plain(model: Any) -> object:
    """A pydantic model's data without ``created`` (a clock reading, not reply data)."""
    data = model.model_dump(mode="json")
    data.pop("created", None)
    return data


class OpenAIDriver(Driver):
    name = "openai"
    boundaries = (
        Boundary("openai.resources.chat.completions", "Completions.create"),
        Boundary("openai.resources.chat.completions", "AsyncCompletions.create", is_async=True),
    )
    records_retries = True

    def __init__(self, server: FakeLLMServer, timeout: float) -> None:
        super().__init__(server, timeout)
        options: dict[str, Any] = {
            "base_url": server.openai_base_url,
            "api_key": "sk-faults",
            "max_retries": 1,
            "timeout": timeout,
        }
        self.client = openai.OpenAI(**options)
        self.async_client = openai.AsyncOpenAI(**options)

    def instrumentor(self) -> BaseInstrumentor:
        return OpenAIInstrumentor()

    def _request(self, fault: str | None, stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": QUESTION}],
            "extra_headers": _headers(fault),
        }
        if stream:
            request |= {"stream": True, "stream_options": {"include_usage": True}}
        return request

    def call(self, fault: str | None) -> object:
        return _plain(self.client.chat.completions.create(**self._request(fault, False)))

    async def acall(self, fault: str | None) -> object:
        return _plain(
            await self.async_client.chat.completions.create(**self._request(fault, False))
        )

    def stream(self, fault: str | None) -> Iterator[Any]:
        stream: Iterator[Any] = self.client.chat.completions.create(**self._request(fault, True))
        return stream

    async def astream(self, fault: str | None) -> AsyncIterator[Any]:
        request = self._request(fault, True)
        stream: AsyncIterator[Any] = await self.async_client.chat.completions.create(**request)
        return stream

    def chunk(self, item: Any) -> object:
        return _plain(item)

    async def close(self) -> None:
        self.client.close()
        await self.async_client.close()


class MistralDriver(Driver):
    name = "mistralai"
    model = "mistral-small-latest"
    boundaries = tuple(
        Boundary("mistralai.client.chat", f"Chat.{method}", is_async=method.endswith("_async"))
        for method in ("complete", "complete_async", "stream", "stream_async")
    )
    retry_after_ms = 20
    failures_to_exhaust = 1000  # retried until the backoff's time budget is spent
    retries_by_time = True

    def __init__(self, server: FakeLLMServer, timeout: float) -> None:
        super().__init__(server, timeout)
        backoff = BackoffStrategy(1, 5, 1.5, max_elapsed_time=200, jitter_ms=0)
        self.http, self.async_http = httpx2.Client(), httpx2.AsyncClient()
        self.client = Mistral(
            api_key="faults",
            server_url=server.mistral_server_url,
            client=self.http,
            async_client=self.async_http,
            retry_config=RetryConfig("backoff", backoff, retry_connection_errors=False),
            timeout_ms=int(timeout * 1000),
        )

    def instrumentor(self) -> BaseInstrumentor:
        return MistralAIInstrumentor()

    def _request(self, fault: str | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": QUESTION}],
            "http_headers": _headers(fault),
        }

    def call(self, fault: str | None) -> object:
        return _plain(self.client.chat.complete(**self._request(fault)))

    async def acall(self, fault: str | None) -> object:
        return _plain(await self.client.chat.complete_async(**self._request(fault)))

    def stream(self, fault: str | None) -> Iterator[Any]:
        return self.client.chat.stream(**self._request(fault))

    async def astream(self, fault: str | None) -> AsyncIterator[Any]:
        return await self.client.chat.stream_async(**self._request(fault))

    def chunk(self, item: Any) -> object:
        return _plain(item.data)

    async def close(self) -> None:
        self.http.close()
        await self.async_http.aclose()


class OpenAIStreamUsageDriver(OpenAIDriver):
    """The OpenAI SDK streaming without asking for usage: convotel asks (its default) and hides
    the usage chunk; each chunk, unset fields included, is what the SDK yields uninstrumented."""

    name = "openai_stream_usage"

    def _request(self, fault: str | None, stream: bool) -> dict[str, Any]:
        request = super()._request(fault, stream)
        request.pop("stream_options", None)
        return request

    def chunk(self, item: Any) -> object:
        sent = item.to_dict()  # only the fields the server sent
        sent.pop("created", None)
        return (_plain(item), sent)


class LlamaIndexDriver(OpenAIDriver):
    """A LlamaIndex chat model calling over HTTP through the (uninstrumented) OpenAI SDK."""

    name = "llama_index"
    records_retries = False
    streams_are_generators = True

    def instrumentor(self) -> BaseInstrumentor:
        return LlamaIndexInstrumentor()

    def _llm(self, fault: str | None) -> OpenAIClientLLM:
        headers = _headers(fault)
        return OpenAIClientLLM(
            self.client.with_options(default_headers=headers),
            async_client=self.async_client.with_options(default_headers=headers),
            model=self.model,
        )

    def _messages(self) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=QUESTION)]

    def call(self, fault: str | None) -> object:
        return self.chunk(self._llm(fault).chat(self._messages()))

    async def acall(self, fault: str | None) -> object:
        return self.chunk(await self._llm(fault).achat(self._messages()))

    def stream(self, fault: str | None) -> Iterator[Any]:
        stream: Iterator[Any] = self._llm(fault).stream_chat(self._messages())
        return stream

    async def astream(self, fault: str | None) -> AsyncIterator[Any]:
        stream: AsyncIterator[Any] = await self._llm(fault).astream_chat(self._messages())
        return stream

    def chunk(self, item: Any) -> object:
        return (item.message.content, item.delta, item.additional_kwargs)


class DSPyDriver(Driver):
    """``dspy.LM`` on its LiteLLM engine; streams through ``dspy.streamify``."""

    name = "dspy"
    boundaries = (
        Boundary("dspy.clients.execution", "execute"),
        Boundary("dspy.clients.execution", "aexecute", is_async=True),
    )
    retry_after_ms = 0  # DSPy sleeps `retry-after` whole seconds (0), else >= 1 s
    proxies_streams = False  # DSPy runs the LM call itself and forwards its chunks
    streams_are_generators = True

    def instrumentor(self) -> BaseInstrumentor:
        return DSPyInstrumentor()

    def _lm(self, fault: str | None) -> dspy.LM:
        return dspy.LM(
            f"openai/{self.model}",
            engine="litellm",
            api_base=self.server.openai_base_url,
            api_key="sk-faults",
            cache=False,
            num_retries=1,
            timeout=self.timeout,
            extra_headers=_headers(fault),
        )

    def call(self, fault: str | None) -> object:
        outputs: object = self._lm(fault)(QUESTION)
        return outputs

    async def acall(self, fault: str | None) -> object:
        outputs: object = await self._lm(fault).acall(QUESTION)
        return outputs

    def _program(self, fault: str | None) -> Callable[[], Any]:
        lm = self._lm(fault)

        async def ask() -> dspy.Prediction:
            return dspy.Prediction(outputs=await lm.acall(QUESTION))

        return ask

    def stream(self, fault: str | None) -> Iterator[Any]:
        stream: Iterator[Any] = dspy.streamify(self._program(fault), async_streaming=False)()
        return stream

    async def astream(self, fault: str | None) -> AsyncIterator[Any]:
        stream: AsyncIterator[Any] = dspy.streamify(self._program(fault))()
        return stream

    async def close(self) -> None:
        """Nothing to release: LiteLLM owns (and caches) its clients."""

    def chunk(self, item: Any) -> object:
        if isinstance(item, dspy.Prediction):
            return ("prediction", item.toDict())
        choices = getattr(item, "choices", None) or []
        return ("chunk", [choice.delta.content for choice in choices])


DRIVERS: tuple[type[Driver], ...] = (
    OpenAIDriver,
    OpenAIStreamUsageDriver,
    MistralDriver,
    LlamaIndexDriver,
    DSPyDriver,
)
