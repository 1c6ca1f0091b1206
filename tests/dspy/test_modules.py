"""Modules as CHAIN spans, LM calls as LLM spans: names, kinds, attributes, links, failures."""

from __future__ import annotations

import asyncio
import json

import dspy
import pytest
from dspy_loopback import COMPLETION_TOKENS, PROMPT_TOKENS, LoopbackServer, Reply, adapter_reply
from dspy_spans import HAS_NATIVE_ENGINE, by_name, one, parent_of
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import REDACTED_VALUE, TraceConfig, using_attributes, using_session
from convotel.dspy import DSPyInstrumentor

CHAIN = OpenInferenceSpanKindValues.CHAIN.value
LLM = OpenInferenceSpanKindValues.LLM.value
KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND


class BasicQA(dspy.Signature):
    """Answer questions with short factoid answers."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="often between 1 and 5 words")


def test_predict_call_is_one_chain_span_over_one_llm_span(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm), using_attributes(session_id="s-1", user_id="u-1"):
        prediction = dspy.Predict(BasicQA)(question="What is the capital of France?")

    assert prediction.answer == "answer to What is the capital of France?"
    finished = spans.get_finished_spans()
    assert sorted(s.name for s in finished) == ["LM.__call__", "Predict.forward"]
    module, llm = one(finished, "Predict.forward"), one(finished, "LM.__call__")
    assert module.parent is None
    assert parent_of(finished, llm) is module
    for span in (module, llm):
        assert span.status.status_code is StatusCode.OK
        assert span.attributes[SpanAttributes.SESSION_ID] == "s-1"
        assert span.attributes[SpanAttributes.USER_ID] == "u-1"

    assert module.attributes[KIND] == CHAIN
    assert module.attributes["dspy.signature"] == "question -> answer"
    assert module.attributes["dspy.signature.instructions"] == BasicQA.__doc__
    assert json.loads(module.attributes[SpanAttributes.INPUT_VALUE]) == {
        "question": "What is the capital of France?"
    }
    assert json.loads(module.attributes[SpanAttributes.OUTPUT_VALUE]) == {
        "answer": "answer to What is the capital of France?"
    }

    assert llm.attributes[KIND] == LLM
    assert llm.attributes[SpanAttributes.LLM_PROVIDER] == "openai"
    assert llm.attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == PROMPT_TOKENS
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == COMPLETION_TOKENS
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == PROMPT_TOKENS + COMPLETION_TOKENS
    assert json.loads(llm.attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS]) == {
        "temperature": 0.2,
        "max_tokens": 256,
    }
    assert llm.attributes["llm.input_messages.0.message.role"] == "system"
    assert "short factoid answers" in llm.attributes["llm.input_messages.0.message.content"]
    assert llm.attributes["llm.input_messages.1.message.role"] == "user"
    assert (
        "What is the capital of France?" in llm.attributes["llm.input_messages.1.message.content"]
    )
    assert llm.attributes["llm.output_messages.0.message.role"] == "assistant"
    assert "answer to What is" in llm.attributes["llm.output_messages.0.message.content"]


def test_secrets_and_connection_settings_are_never_recorded(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="Anything secret?")

    for span in spans.get_finished_spans():
        for value in span.attributes.values():
            assert "sk-test-secret" not in str(value)
            assert "127.0.0.1" not in str(value)


def test_chain_of_thought_nests_its_predict_and_lm(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm), using_session("s-cot"):
        prediction = dspy.ChainOfThought("question -> answer")(question="Why is the sky blue?")

    assert prediction.reasoning == "thinking about Why is the sky blue?"
    finished = spans.get_finished_spans()
    cot, predict = one(finished, "ChainOfThought.forward"), one(finished, "Predict.forward")
    llm = one(finished, "LM.__call__")
    assert cot.parent is None
    assert parent_of(finished, predict) is cot
    assert parent_of(finished, llm) is predict
    assert json.loads(cot.attributes[SpanAttributes.OUTPUT_VALUE])["reasoning"] == (
        "thinking about Why is the sky blue?"
    )
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-cot"}


class Pipeline(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspy.Predict("question -> answer")
        self.second = dspy.ChainOfThought("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.first(question=question)
        return self.second(question=draft.answer)


def test_custom_module_records_positional_inputs_by_name_and_nests_submodules(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm):
        Pipeline()("two steps")

    finished = spans.get_finished_spans()
    pipeline = one(finished, "Pipeline.forward")
    assert pipeline.parent is None
    assert pipeline.attributes[KIND] == CHAIN
    assert json.loads(pipeline.attributes[SpanAttributes.INPUT_VALUE]) == {"question": "two steps"}
    assert json.loads(pipeline.attributes[SpanAttributes.OUTPUT_VALUE])["answer"] == (
        "answer to answer to two steps"
    )
    assert "dspy.signature" not in pipeline.attributes
    assert len(by_name(finished, "Predict.forward")) == 2
    assert len(by_name(finished, "LM.__call__")) == 2
    assert {parent_of(finished, s).name for s in by_name(finished, "Predict.forward")} == {
        "Pipeline.forward",
        "ChainOfThought.forward",
    }


def test_user_exception_propagates_as_the_same_object_and_marks_the_span(
    spans: InMemorySpanExporter,
) -> None:
    failure = KeyError("missing")

    class Broken(dspy.Module):
        def forward(self, question: str) -> dspy.Prediction:
            raise failure

    with pytest.raises(KeyError) as raised:
        Broken()(question="q")

    assert raised.value is failure
    span = one(spans.get_finished_spans(), "Broken.forward")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"
    assert span.events[0].attributes["exception.type"] == "KeyError"


def test_http_error_fails_the_llm_and_module_spans(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(*[Reply(status=500)] * 3)  # DSPy < 3.4 retries once with the JSON adapter

    with dspy.context(lm=lm), pytest.raises(Exception) as raised:  # noqa: PT011 - varies by DSPy
        dspy.Predict("question -> answer")(question="Will this fail?")

    finished = spans.get_finished_spans()
    module = one(finished, "Predict.forward")
    assert module.status.status_code is StatusCode.ERROR
    assert module.attributes["error.type"] == type(raised.value).__qualname__
    llm_spans = by_name(finished, "LM.__call__")
    assert llm_spans
    for llm in llm_spans:
        assert parent_of(finished, llm) is module
        assert llm.status.status_code is StatusCode.ERROR
        assert llm.events[0].name == "exception"
        assert llm.attributes["http.response.status_code"] == 500  # DSPy 3.4: LMError.status
        assert SpanAttributes.LLM_TOKEN_COUNT_TOTAL not in llm.attributes
        assert llm.attributes[SpanAttributes.LLM_PROVIDER] == "openai"


def test_malformed_response_body_fails_the_llm_span(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(*[Reply(raw_body=b"<html>not json</html>")] * 3)

    with dspy.context(lm=lm), pytest.raises(Exception):  # noqa: B017, PT011 - varies by DSPy
        dspy.Predict("question -> answer")(question="Garbled?")

    llm_spans = by_name(spans.get_finished_spans(), "LM.__call__")
    assert llm_spans
    for llm in llm_spans:
        assert llm.status.status_code is StatusCode.ERROR
        assert llm.events[0].name == "exception"


def test_unparseable_completion_fails_the_module_but_keeps_the_llm_tokens(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply("no fields at all", "still no fields")  # ChatAdapter retries with JSON

    with dspy.context(lm=lm), pytest.raises(Exception):  # noqa: B017, PT011 - AdapterParseError
        dspy.Predict("question -> answer")(question="Unparseable?")

    finished = spans.get_finished_spans()
    assert one(finished, "Predict.forward").status.status_code is StatusCode.ERROR
    for llm in by_name(finished, "LM.__call__"):
        assert llm.status.status_code is StatusCode.OK
        assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 49


async def test_acall_traces_aforward_and_lm_acall(spans: InMemorySpanExporter, lm: dspy.LM) -> None:
    with dspy.context(lm=lm), using_session("s-async"):
        prediction = await dspy.Predict("question -> answer").acall(question="async?")

    assert prediction.answer == "answer to async?"
    finished = spans.get_finished_spans()
    module, llm = one(finished, "Predict.aforward"), one(finished, "LM.acall")
    assert parent_of(finished, llm) is module
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == PROMPT_TOKENS
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-async"}


async def test_cancelled_acall_ends_its_spans_as_cancelled(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer
) -> None:
    llm_server.reply(Reply(adapter_reply(answer="late"), delay=2.0))

    with dspy.context(lm=lm):
        task = asyncio.create_task(dspy.Predict("question -> answer").acall(question="slow?"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    finished = spans.get_finished_spans()
    for name in ("Predict.aforward", "LM.acall"):
        span = one(finished, name)
        assert span.status.status_code is StatusCode.ERROR
        assert "cancelled" in (span.status.description or "")


def test_lm_called_directly_is_one_llm_span(spans: InMemorySpanExporter, lm: dspy.LM) -> None:
    with using_session("s-direct"):
        outputs = lm("Say hi", max_tokens=5)

    assert isinstance(outputs, list)
    llm = one(spans.get_finished_spans(), "LM.__call__")
    assert llm.parent is None
    assert llm.attributes[SpanAttributes.INPUT_VALUE] == "Say hi"
    assert llm.attributes["llm.input_messages.0.message.content"] == "Say hi"
    assert json.loads(llm.attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS]) == {
        "temperature": 0.2,
        "max_tokens": 5,
    }
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 49


def test_cached_answer_is_an_llm_span_without_token_counts(
    spans: InMemorySpanExporter, llm_server: LoopbackServer
) -> None:
    cached_lm = dspy.LM(
        "openai/gpt-4o-mini", api_base=llm_server.base_url, api_key="sk-test", num_retries=0
    )
    question = f"cached question {id(spans)}"
    with dspy.context(lm=cached_lm):
        dspy.Predict("question -> answer")(question=question)
        dspy.Predict("question -> answer")(question=question)

    assert len(llm_server.requests) == 1
    first, second = by_name(spans.get_finished_spans(), "LM.__call__")
    assert first.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 49
    assert SpanAttributes.LLM_TOKEN_COUNT_TOTAL not in second.attributes
    if HAS_NATIVE_ENGINE:
        assert second.attributes["dspy.cache_hit"] is True


def test_trace_config_hides_inputs_and_outputs(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider, lm: dspy.LM
) -> None:
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, config=TraceConfig(hide_inputs=True, hide_outputs=True)
    )
    try:
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="private question")
    finally:
        instrumentor.uninstrument()

    for span in span_exporter.get_finished_spans():
        assert span.attributes.get(SpanAttributes.INPUT_VALUE) in (None, REDACTED_VALUE)
        assert span.attributes.get(SpanAttributes.OUTPUT_VALUE) in (None, REDACTED_VALUE)
        assert not any("private question" in str(v) for v in span.attributes.values())
    llm = one(span_exporter.get_finished_spans(), "LM.__call__")
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 49


@pytest.mark.skipif(not HAS_NATIVE_ENGINE, reason="explicit lm15 requests need DSPy >= 3.4")
def test_explicit_lm15_request_records_its_messages_and_response(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    from dspy.lm15 import Message, Request

    with using_session("s-request"):
        response = lm(Request(model=lm.model, system="Be brief.", messages=(Message.user("hi"),)))

    llm = one(spans.get_finished_spans(), "LM.__call__")
    assert llm.attributes["llm.input_messages.0.message.role"] == "system"
    assert llm.attributes["llm.input_messages.0.message.content"] == "Be brief."
    assert llm.attributes["llm.input_messages.1.message.role"] == "user"
    assert llm.attributes["llm.input_messages.1.message.content"] == "hi"
    assert llm.attributes["llm.output_messages.0.message.content"] == response.text
    assert llm.attributes[SpanAttributes.OUTPUT_VALUE] == response.text
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 49
    assert llm.attributes[SpanAttributes.SESSION_ID] == "s-request"
