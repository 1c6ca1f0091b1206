"""A LlamaIndex chat model over an ``openai.OpenAI`` client, for the demo's LlamaIndex conversation.

``llama-index-llms-openai`` pins ``openai<3`` while convotel-openai instruments ``openai>=3``, so
the demo brings this small model instead. It is a regular LlamaIndex ``LLM``: its calls go through
LlamaIndex's instrumentation (which the LlamaIndex instrumentor listens to), and it sends every
call through the OpenAI SDK client it is given (which the OpenAI instrumentor traces). One model
call is still one LLM span: the framework span defers to the provider span below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from openai.types.chat import ChatCompletionMessageParam
from pydantic import PrivateAttr


def _as_openai_message(message: ChatMessage) -> ChatCompletionMessageParam:
    content = message.content or ""
    if message.role == MessageRole.SYSTEM:
        return {"role": "system", "content": content}
    if message.role == MessageRole.ASSISTANT:
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": content}


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": int(usage.prompt_tokens),
        "completion_tokens": int(usage.completion_tokens),
        "total_tokens": int(usage.total_tokens),
    }


class OpenAIClientLLM(LLM):
    """LlamaIndex chat model that calls ``client.chat.completions.create``."""

    model: str
    max_tokens: int = 256
    context_window: int = 128_000
    _client: openai.OpenAI = PrivateAttr()
    _async_client: openai.AsyncOpenAI | None = PrivateAttr(default=None)
    _tokens: list[int] = PrivateAttr(default_factory=lambda: [0, 0])

    def __init__(
        self, client: openai.OpenAI, async_client: openai.AsyncOpenAI | None = None, **data: Any
    ) -> None:
        """``async_client`` serves ``achat``/``astream_chat``; without it they run ``client``."""
        super().__init__(**data)
        self._client = client
        self._async_client = async_client

    def take_usage(self) -> tuple[int, int]:
        """Prompt and completion tokens reported since the last call (then reset)."""
        prompt, completion = self._tokens
        self._tokens = [0, 0]
        return prompt, completion

    def _count(self, usage: Any) -> dict[str, int]:
        counts = _usage(usage)
        self._tokens[0] += counts.get("prompt_tokens", 0)
        self._tokens[1] += counts.get("completion_tokens", 0)
        return counts

    @classmethod
    def class_name(cls) -> str:
        return "OpenAIClientLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            model_name=self.model,
        )

    def _request(self, messages: Sequence[ChatMessage], stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [_as_openai_message(message) for message in messages],
            "max_tokens": self.max_tokens,
        }
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        return request

    def _response(self, completion: Any) -> ChatResponse:
        text = completion.choices[0].message.content or ""
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            raw=completion.model_dump(),
            additional_kwargs=self._count(completion.usage),
        )

    def _chunk_response(self, text: str, chunk: Any) -> tuple[str, ChatResponse]:
        delta = (chunk.choices[0].delta.content or "") if chunk.choices else ""
        text += delta
        message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
        response = ChatResponse(
            message=message,
            delta=delta,
            raw=chunk.model_dump(),
            additional_kwargs=self._count(chunk.usage),
        )
        return text, response

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._response(
            self._client.chat.completions.create(**self._request(messages, stream=False))
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = self._client.chat.completions.create(**self._request(messages, stream=True))

        def generate() -> ChatResponseGen:
            text = ""
            with stream:
                for chunk in stream:
                    text, response = self._chunk_response(text, chunk)
                    yield response

        return generate()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)])
        return CompletionResponse(text=response.message.content or "", raw=response.raw)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        responses = self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)])

        def generate() -> CompletionResponseGen:
            for response in responses:
                yield CompletionResponse(
                    text=response.message.content or "", delta=response.delta, raw=response.raw
                )

        return generate()

    # Async variants await the async client; without one they run the sync client, as
    # LlamaIndex's own CustomLLM does (blocking the event loop for the call).

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self._async_client is None:
            response: ChatResponse = self.chat(messages, **kwargs)
            return response
        request = self._request(messages, stream=False)
        return self._response(await self._async_client.chat.completions.create(**request))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        if self._async_client is None:
            responses = self.stream_chat(messages, **kwargs)

            async def replay() -> ChatResponseAsyncGen:
                for response in responses:
                    yield response

            return replay()
        request = self._request(messages, stream=True)
        stream = await self._async_client.chat.completions.create(**request)

        async def generate() -> ChatResponseAsyncGen:
            text = ""
            async with stream:
                async for chunk in stream:
                    text, response = self._chunk_response(text, chunk)
                    yield response

        return generate()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        response: CompletionResponse = self.complete(prompt, formatted=formatted, **kwargs)
        return response

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        responses = self.stream_complete(prompt, formatted=formatted, **kwargs)

        async def generate() -> CompletionResponseAsyncGen:
            for response in responses:
                yield response

        return generate()
