"""Agents and workflows: AGENT, TOOL and step spans, sessions across LlamaIndex's own tasks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool, FunctionTool
from llama_index.core.workflow import Context, StartEvent, StopEvent, Workflow, step
from llama_index_spans import KIND, FinishedSpans, attributes
from opentelemetry.trace import StatusCode

from convotel import using_session, using_user


class ScriptedToolLLM(FunctionCallingLLM):
    """Asks for ``get_weather`` first, then answers from the tool's result."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-agent-model", is_function_calling_model=True)

    def _reply(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        tool_results = [m for m in messages if m.role.value == "tool"]
        if tool_results:
            return ChatResponse(
                message=ChatMessage(role="assistant", content=f"Answer: {tool_results[-1].content}")
            )
        call = {"id": "call-1", "name": "get_weather", "args": {"city": "Paris"}}
        return ChatResponse(
            message=ChatMessage(
                role="assistant", content="", additional_kwargs={"tool_calls": [call]}
            )
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[ChatResponse]:
        reply = self._reply(messages)

        def chunks() -> Iterator[ChatResponse]:
            yield reply

        return chunks()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> AsyncIterator[ChatResponse]:
        reply = self._reply(messages)

        async def chunks() -> AsyncIterator[ChatResponse]:
            await asyncio.sleep(0)
            yield reply

        return chunks()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="")

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return CompletionResponse(text="")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role="user", content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {"messages": messages, "tools": tools}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        return [
            ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
            for c in calls
        ]


def get_weather(city: str) -> str:
    """Report the current weather in a city."""
    return f"Sunny in {city}"


def broken_weather(city: str) -> str:
    """Report the current weather in a city."""
    raise LookupError(f"no station in {city}")


def weather_agent(tool: Any = get_weather) -> FunctionAgent:
    return FunctionAgent(
        name="weather",
        description="Answers weather questions.",
        tools=[FunctionTool.from_defaults(tool, name="get_weather")],
        llm=ScriptedToolLLM(),
        system_prompt="Use the tool.",
    )


def ancestors(spans: FinishedSpans, span: Any) -> list[str]:
    names = []
    parent = spans.parent(span)
    while parent is not None:
        names.append(parent.name)
        parent = spans.parent(parent)
    return names


async def test_agent_run_is_an_agent_span_with_llm_tool_and_step_spans(
    spans: FinishedSpans,
) -> None:
    with using_session("agent-1"), using_user("user-1"):
        result = await weather_agent().run("Weather in Paris?")

    root = spans.one("FunctionAgent.run")
    assert root.parent is None
    assert attributes(root)[KIND] == "AGENT"
    assert attributes(root)["input.value"] == "Weather in Paris?"
    assert attributes(root)["output.value"] == str(result) == "Answer: Sunny in Paris"
    llm_spans = spans.of_kind("LLM")
    assert [span.name for span in llm_spans] == ["ScriptedToolLLM.astream_chat"] * 2
    first = attributes(llm_spans[0])
    schema = json.loads(first["llm.tools.0.tool.json_schema"])
    assert schema["function"]["name"] == "get_weather"
    assert schema["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert first["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"] == (
        "get_weather"
    )
    arguments = first["llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments"]
    assert json.loads(arguments) == {"city": "Paris"}
    (tool,) = spans.of_kind("TOOL")
    assert attributes(tool)["tool.name"] == "get_weather"
    assert json.loads(attributes(tool)["input.value"]) == {"city": "Paris"}
    assert "FunctionAgent.run" in ancestors(spans, tool)
    step = spans.parent(tool)
    assert step is not None
    assert attributes(step)[KIND] == "CHAIN"
    assert step.name.endswith(".call_tool")
    assert {span.context.trace_id for span in spans.all()} == {root.context.trace_id}
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("agent-1", user="user-1", turns=1, llm_calls=2, errors=0)


async def test_failing_tool_is_an_error_span_and_the_agent_goes_on(spans: FinishedSpans) -> None:
    with using_session("agent-2"):
        result = await weather_agent(broken_weather).run("Weather in Paris?")

    (tool,) = spans.of_kind("TOOL")
    assert tool.status.status_code is StatusCode.ERROR
    assert "no station in Paris" in (tool.status.description or "")
    assert "no station in Paris" in str(result)
    assert spans.one("FunctionAgent.run").status.status_code is StatusCode.OK
    spans.captured().assert_session("agent-2", errors=1)


async def test_concurrent_agent_runs_keep_their_sessions(spans: FinishedSpans) -> None:
    async def run(session: str, user: str) -> Any:
        with using_session(session), using_user(user):
            return await weather_agent().run(f"Weather for {user}?")

    await asyncio.gather(*(run(f"s-{n}", f"u-{n}") for n in range(3)))

    captured = spans.captured()
    captured.assert_sessions_isolated()
    captured.assert_every_span_in_a_session()
    for n in range(3):
        captured.assert_session(f"s-{n}", user=f"u-{n}", turns=1, llm_calls=2)


async def test_multi_agent_workflow_is_an_agent_span(spans: FinishedSpans) -> None:
    workflow = AgentWorkflow(agents=[weather_agent()], root_agent="weather")
    with using_session("workflow-1"):
        await workflow.run(user_msg="Weather in Paris?")

    root = spans.one("AgentWorkflow.run")
    assert attributes(root)[KIND] == "AGENT"
    assert attributes(root)["input.value"] == "Weather in Paris?"
    assert len(spans.of_kind("TOOL")) == 1
    spans.captured().assert_every_span_in_a_session()


class CountingFlow(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        words = await asyncio.gather(*(self.length(word) for word in ev.text.split()))
        return StopEvent(result=f"{sum(words)} letters")

    async def length(self, word: str) -> int:
        await asyncio.sleep(0)
        return len(word)


async def test_workflow_run_and_steps_are_chain_spans_in_the_session(spans: FinishedSpans) -> None:
    with using_session("flow-1"):
        result = await CountingFlow().run(text="two words")

    assert result == "8 letters"
    root = spans.one("CountingFlow.run")
    assert attributes(root)[KIND] == "CHAIN"
    assert attributes(root)["session.id"] == "flow-1"
    step_span = spans.one("CountingFlow.count")
    assert spans.parent(step_span) is root
    assert attributes(step_span)["session.id"] == "flow-1"


class SlowLLM(ScriptedToolLLM):
    started: Any = None

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_cancelled_call_ends_its_span_as_cancelled(spans: FinishedSpans) -> None:
    llm = SlowLLM(started=asyncio.Event())
    with using_session("cancel-1"):
        task = asyncio.create_task(llm.achat([ChatMessage(role="user", content="Hi")]))
    await llm.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (span,) = spans.of_kind("LLM")
    assert span.status.status_code is StatusCode.ERROR
    assert "cancelled" in (span.status.description or "")
    assert attributes(span)["session.id"] == "cancel-1"
