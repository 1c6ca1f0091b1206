"""Regressions found by the reliability suite (tests/reliability): DSPy records that used to fail
the LM call, and tool definitions that slipped past ``hide_inputs``."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig
from convotel.dspy.calls import LM_CALL, finalize_observer, history_observer
from convotel.dspy.extraction import lm_request_attributes
from convotel.spans import Tracing, sync_wrapper

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


class UnreadableResult:
    """A result whose every attribute read fails with something other than AttributeError."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"cannot read {name}")


class UnreadableEntry(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError(f"cannot read {key}")


@pytest.mark.parametrize("observer", ["finalize", "history"])
def test_an_lm_record_that_cannot_be_read_never_fails_the_lm_call(
    observer: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider.get_tracer("test"))
    lm = SimpleNamespace(model="openai/gpt-4o-mini")
    answer = ["Paris"]

    def record(*args: Any, **kwargs: Any) -> list[str]:
        return answer

    def lm_call(*args: Any, **kwargs: Any) -> Any:
        if observer == "finalize":
            wrapper = finalize_observer(lambda: tracing)
            return wrapper(record, None, (lm, "call", UnreadableResult()), {})
        return history_observer(lambda: tracing)(record, lm, (UnreadableEntry(),), {})

    assert sync_wrapper(lambda: tracing, LM_CALL)(lm_call, lm, (), {}) is answer
    (span,) = span_exporter.get_finished_spans()
    assert span.status.is_ok


def test_tool_definitions_are_recorded_once_and_hidden_with_the_inputs() -> None:
    lm = SimpleNamespace(model="openai/gpt-4o-mini", kwargs={"temperature": 0.2})
    arguments = {"messages": [{"role": "user", "content": "Weather?"}], "tools": [TOOL]}

    pairs = dict(lm_request_attributes(lm, arguments))

    assert json.loads(pairs["llm.tools.0.tool.json_schema"]) == TOOL
    assert json.loads(pairs["llm.invocation_parameters"]) == {"temperature": 0.2}
    hidden = TraceConfig(hide_inputs=True)
    assert [key for key in pairs if hidden.mask(key, pairs[key]) == pairs[key]] == [
        "llm.provider",
        "llm.request.model_name",
        "llm.model_name",
        "llm.invocation_parameters",
    ]
