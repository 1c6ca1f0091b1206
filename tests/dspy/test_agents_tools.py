"""ReAct as an AGENT span, tools as TOOL spans with name, arguments and result."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy_loopback import LoopbackServer, adapter_reply
from dspy_spans import by_name, one, parent_of
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import using_session

KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


def flaky_lookup(city: str) -> str:
    """A tool that always fails."""
    raise RuntimeError(f"lookup service down for {city}")


def react_replies(tool: str, city: str) -> list[str]:
    """One tool step, then finish, then the extraction (ChainOfThought) reply."""
    return [
        adapter_reply(
            next_thought="I should look it up.",
            next_tool_name=tool,
            next_tool_args=json.dumps({"city": city}),
        ),
        adapter_reply(next_thought="Done.", next_tool_name="finish", next_tool_args="{}"),
        adapter_reply(reasoning="The tool said so.", answer=f"It is sunny in {city}."),
    ]


def test_react_is_an_agent_span_over_its_steps_and_tool_spans(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(*react_replies("get_weather", "Paris"))
    agent = dspy.ReAct("question -> answer", tools=[get_weather], max_iters=3)

    with dspy.context(lm=lm), using_session("s-agent"):
        prediction = agent(question="Weather in Paris?")

    assert prediction.answer == "It is sunny in Paris."
    finished = spans.get_finished_spans()
    react = one(finished, "ReAct.forward")
    assert react.parent is None
    assert react.attributes[KIND] == OpenInferenceSpanKindValues.AGENT.value
    assert react.attributes[SpanAttributes.AGENT_NAME] == "ReAct"
    assert react.attributes["dspy.signature"] == "question -> answer"

    tool = one(finished, "get_weather")
    assert parent_of(finished, tool) is react
    assert tool.attributes[KIND] == OpenInferenceSpanKindValues.TOOL.value
    assert tool.attributes[SpanAttributes.TOOL_NAME] == "get_weather"
    assert tool.attributes[SpanAttributes.TOOL_DESCRIPTION] == "Current weather in a city."
    assert json.loads(tool.attributes[SpanAttributes.TOOL_PARAMETERS]) == {
        "city": {"type": "string"}
    }
    assert json.loads(tool.attributes[SpanAttributes.INPUT_VALUE]) == {"city": "Paris"}
    assert tool.attributes[SpanAttributes.OUTPUT_VALUE] == "sunny in Paris"
    assert tool.status.status_code is StatusCode.OK

    finish = one(finished, "finish")
    assert parent_of(finished, finish) is react
    steps = [s for s in by_name(finished, "Predict.forward") if parent_of(finished, s) is react]
    assert len(steps) == 2
    extract = one(finished, "ChainOfThought.forward")
    assert parent_of(finished, extract) is react
    assert len(by_name(finished, "LM.__call__")) == 3
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-agent"}


def test_failing_tool_is_an_error_span_and_the_agent_carries_on(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(*react_replies("flaky_lookup", "Oslo"))
    agent = dspy.ReAct("question -> answer", tools=[flaky_lookup], max_iters=3)

    with dspy.context(lm=lm):
        prediction = agent(question="Weather in Oslo?")

    assert "Execution error in flaky_lookup" in prediction.trajectory["observation_0"]
    finished = spans.get_finished_spans()
    tool = one(finished, "flaky_lookup")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes["error.type"] == "RuntimeError"
    assert tool.events[0].attributes["exception.message"] == "lookup service down for Oslo"
    assert one(finished, "ReAct.forward").status.status_code is StatusCode.OK


async def test_async_react_traces_aforward_and_tool_acall(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(*react_replies("get_weather", "Rome"))
    agent = dspy.ReAct("question -> answer", tools=[get_weather], max_iters=3)

    with dspy.context(lm=lm), using_session("s-async-agent"):
        prediction = await agent.acall(question="Weather in Rome?")

    assert prediction.answer == "It is sunny in Rome."
    finished = spans.get_finished_spans()
    react = one(finished, "ReAct.aforward")
    tool = one(finished, "get_weather")
    assert parent_of(finished, tool) is react
    assert tool.attributes[SpanAttributes.OUTPUT_VALUE] == "sunny in Rome"
    assert len(by_name(finished, "LM.acall")) == 3
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-async-agent"}


def test_tool_called_directly_records_structured_results_as_json(
    spans: InMemorySpanExporter,
) -> None:
    def lookup(user_id: int, verbose: bool = False) -> dict[str, object]:
        """Look a user up."""
        return {"id": user_id, "name": "Ada"}

    tool = dspy.Tool(lookup)
    assert tool(user_id=7) == {"id": 7, "name": "Ada"}

    span = one(spans.get_finished_spans(), "lookup")
    assert json.loads(span.attributes[SpanAttributes.INPUT_VALUE]) == {"user_id": 7}
    assert json.loads(span.attributes[SpanAttributes.OUTPUT_VALUE]) == {"id": 7, "name": "Ada"}
    assert span.attributes[SpanAttributes.OUTPUT_MIME_TYPE] == "application/json"


def test_tool_argument_validation_error_reaches_the_caller_unchanged(
    spans: InMemorySpanExporter,
) -> None:
    tool = dspy.Tool(get_weather)

    with pytest.raises(ValueError, match="town") as raised:
        tool(town="Paris")

    span = one(spans.get_finished_spans(), "get_weather")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == type(raised.value).__qualname__
