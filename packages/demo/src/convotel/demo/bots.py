"""The demo chatbot, once per SDK: it keeps the conversation history and answers one turn at a time.

Each bot is plain application code: it knows nothing about convotel. The spans come from the
instrumentors (model calls) and from the app's own tracer (the turn and the tool runs). A streamed
turn hands each piece of reply text to ``on_text`` as it arrives (the web service sends it on).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
)
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.trace import Status, StatusCode, Tracer

from convotel.demo.fake_server import FAULT_HEADER
from convotel.demo.script import (
    OPENAI_MODEL,
    SYSTEM_PROMPT,
    WEATHER_TOOL_DESCRIPTION,
    WEATHER_TOOL_NAME,
    WEATHER_TOOL_PARAMETERS,
    Conversation,
    Fault,
    ScriptedTurn,
    run_tool,
)

if TYPE_CHECKING:
    from mistralai.client import Mistral
    from mistralai.client.models import ChatCompletionRequestMessageTypedDict

#: Receives each piece of a streamed reply's text as it arrives.
TextSink = Callable[[str], None]

MAX_TOKENS = 256
MAX_TOOL_ROUNDS = 3
#: In --live mode a fault cannot be injected, so the failing attempt asks for a model that does
#: not exist (HTTP 404 from OpenAI, and from the loopback server) and the retry uses the real one.
MISSING_MODEL = "convotel-demo-missing-model"

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": WEATHER_TOOL_NAME,
        "description": WEATHER_TOOL_DESCRIPTION,
        "parameters": WEATHER_TOOL_PARAMETERS,
    },
}


@dataclass
class Reply:
    """What the bot answered in one turn, and what it took."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    tool_calls: list[str] = field(default_factory=list)
    recovered_errors: list[str] = field(default_factory=list)

    def add_usage(self, usage: Any) -> None:
        if usage is not None:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)


class ChatBot(Protocol):
    """One conversation's bot."""

    def reply(self, turn: ScriptedTurn, on_text: TextSink | None = None) -> Reply:
        """Answer one user turn (the history is kept between turns); a streamed turn passes its
        text to ``on_text`` piece by piece."""


def fault_header(fault: Fault | None, sdk_attempts: int) -> dict[str, str]:
    """The loopback server's fault-injection header for ``fault`` (see ``fake_server``)."""
    if fault == "rate_limited":
        return {FAULT_HEADER: "429;retry-after-ms=50"}
    if fault == "server_error":
        return {FAULT_HEADER: f"500*{sdk_attempts};retry-after-ms=50"}
    return {}


@dataclass
class _ModelAnswer:
    text: str
    tool_calls: list[ChatCompletionMessageToolCallParam]


def _collect_stream(
    chunks: Iterable[ChatCompletionChunk], reply: Reply, on_text: TextSink | None
) -> _ModelAnswer:
    """Join a streamed answer: text deltas, tool-call fragments and the final usage chunk."""
    text: list[str] = []
    calls: dict[int, ChatCompletionMessageToolCallParam] = {}
    for chunk in chunks:
        reply.add_usage(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
                if on_text is not None:
                    on_text(choice.delta.content)
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(
                    delta.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = call["id"] or (delta.id or "")
                if delta.function is not None:
                    call["function"]["name"] += delta.function.name or ""
                    call["function"]["arguments"] += delta.function.arguments or ""
    return _ModelAnswer("".join(text), [calls[index] for index in sorted(calls)])


class OpenAIChatBot:
    """Chat through ``openai.OpenAI``, with the weather tool and error recovery."""

    def __init__(self, client: openai.OpenAI, tracer: Tracer, *, live: bool) -> None:
        self.client = client
        self.tracer = tracer
        self.live = live
        self.history: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": SYSTEM_PROMPT}
        ]

    def reply(self, turn: ScriptedTurn, on_text: TextSink | None = None) -> Reply:
        reply = Reply()
        self.history.append({"role": "user", "content": turn.text})
        for _ in range(MAX_TOOL_ROUNDS):
            answer = self._call_recovering(turn, reply, on_text)
            if not answer.tool_calls:
                self.history.append({"role": "assistant", "content": answer.text})
                reply.text = answer.text
                return reply
            self.history.append({"role": "assistant", "tool_calls": answer.tool_calls})
            for call in answer.tool_calls:
                reply.tool_calls.append(call["function"]["name"])
                result = self._run_tool(call)
                self.history.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        raise RuntimeError(f"no answer after {MAX_TOOL_ROUNDS} rounds of tool calls")

    def _call_recovering(
        self, turn: ScriptedTurn, reply: Reply, on_text: TextSink | None
    ) -> _ModelAnswer:
        """One model call; a turn marked ``server_error`` fails once and is retried by the bot."""
        model = MISSING_MODEL if (turn.fault == "server_error" and self.live) else OPENAI_MODEL
        headers = {} if self.live else fault_header(turn.fault, self.client.max_retries + 1)
        try:
            return self._call(turn, reply, model, headers, on_text)
        except openai.APIError as error:
            if turn.fault != "server_error" or reply.recovered_errors:
                raise
            status = getattr(error, "status_code", None)
            reply.recovered_errors.append(f"{type(error).__name__} (HTTP {status})")
            return self._call(turn, reply, OPENAI_MODEL, headers, on_text)

    def _call(
        self,
        turn: ScriptedTurn,
        reply: Reply,
        model: str,
        headers: dict[str, str],
        on_text: TextSink | None,
    ) -> _ModelAnswer:
        reply.model_calls += 1
        tools = [WEATHER_TOOL] if turn.tools else openai.omit
        if turn.stream:
            stream = self.client.chat.completions.create(
                model=model,
                messages=self.history,
                tools=tools,
                max_tokens=MAX_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            with stream:
                return _collect_stream(stream, reply, on_text)
        response = self.client.chat.completions.create(
            model=model,
            messages=self.history,
            tools=tools,
            max_tokens=MAX_TOKENS,
            extra_headers=headers,
        )
        reply.add_usage(response.usage)
        message = response.choices[0].message
        calls: list[ChatCompletionMessageToolCallParam] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls or ()
            if call.type == "function"
        ]
        return _ModelAnswer(message.content or "", calls)

    def _run_tool(self, call: ChatCompletionMessageToolCallParam) -> str:
        """Run the tool in its own TOOL span (the app's span, not an instrumentor's)."""
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        attributes = {
            SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.TOOL.value,
            SpanAttributes.TOOL_NAME: name,
            SpanAttributes.TOOL_DESCRIPTION: WEATHER_TOOL_DESCRIPTION,
            SpanAttributes.TOOL_PARAMETERS: json.dumps(WEATHER_TOOL_PARAMETERS),
            SpanAttributes.INPUT_VALUE: arguments,
            SpanAttributes.INPUT_MIME_TYPE: "application/json",
        }
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            result = run_tool(name, arguments)
            span.set_attribute(SpanAttributes.OUTPUT_VALUE, result)
            span.set_attribute(SpanAttributes.OUTPUT_MIME_TYPE, "application/json")
            span.set_status(Status(StatusCode.OK))
            return result


class MistralChatBot:
    """Chat through ``mistralai``'s ``Mistral`` client (text only)."""

    def __init__(self, client: Mistral, model: str) -> None:
        self.client = client
        self.model = model
        self.history: list[ChatCompletionRequestMessageTypedDict] = [
            {"role": "system", "content": SYSTEM_PROMPT}
        ]

    def reply(self, turn: ScriptedTurn, on_text: TextSink | None = None) -> Reply:
        reply = Reply(model_calls=1)
        self.history.append({"role": "user", "content": turn.text})
        if turn.stream:
            parts: list[str] = []
            with self.client.chat.stream(
                model=self.model, messages=self.history, max_tokens=MAX_TOKENS
            ) as events:
                for event in events:
                    reply.add_usage(event.data.usage)
                    for choice in event.data.choices:
                        content = choice.delta.content
                        if isinstance(content, str) and content:
                            parts.append(content)
                            if on_text is not None:
                                on_text(content)
            reply.text = "".join(parts)
        else:
            response = self.client.chat.complete(
                model=self.model, messages=self.history, max_tokens=MAX_TOKENS
            )
            reply.add_usage(response.usage)
            message = response.choices[0].message if response.choices else None
            content = message.content if message is not None else None
            reply.text = content if isinstance(content, str) else ""
        self.history.append({"role": "assistant", "content": reply.text})
        return reply


class LlamaIndexChatBot:
    """Chat through a LlamaIndex ``SimpleChatEngine`` whose model calls go to the OpenAI client."""

    def __init__(self, client: openai.OpenAI) -> None:
        from llama_index.core.chat_engine import SimpleChatEngine
        from llama_index.core.memory import ChatMemoryBuffer

        from convotel.demo.fake_replies import tokenize
        from convotel.demo.llama_index_llm import OpenAIClientLLM

        self.llm = OpenAIClientLLM(client, model=OPENAI_MODEL, max_tokens=MAX_TOKENS)
        # An explicit tokenizer keeps LlamaIndex from loading tiktoken data.
        memory = ChatMemoryBuffer.from_defaults(token_limit=8000, tokenizer_fn=tokenize)
        self.engine = SimpleChatEngine.from_defaults(
            llm=self.llm, memory=memory, system_prompt=SYSTEM_PROMPT
        )

    def reply(self, turn: ScriptedTurn, on_text: TextSink | None = None) -> Reply:
        if turn.stream:
            streaming = self.engine.stream_chat(turn.text)
            pieces = []
            for piece in streaming.response_gen:
                pieces.append(piece)
                if on_text is not None and piece:
                    on_text(piece)
            text = "".join(pieces)
        else:
            text = self.engine.chat(turn.text).response
        prompt_tokens, completion_tokens = self.llm.take_usage()
        return Reply(text, prompt_tokens, completion_tokens, model_calls=1)


def unsupported_features(conversation: Conversation) -> list[str]:
    """What a conversation asks of its bot that the bot cannot do (empty when all is fine)."""
    if conversation.provider == "openai":
        return []
    problems = []
    if any(turn.tools for turn in conversation.turns):
        problems.append(f"{conversation.provider} bot has no tools")
    if any(turn.fault for turn in conversation.turns):
        problems.append(f"{conversation.provider} bot does not inject faults")
    return problems
