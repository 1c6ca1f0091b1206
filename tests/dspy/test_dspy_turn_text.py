"""The turn rule on DSPy programs: a web request's root span shows the turn's input and output.

Each test opens an HTTP server span as a web framework would and enters the session inside it;
DSPy runs its real adapters on its default engine against the loopback server. DSPy's chat
adapter wraps every field in ``[[ ## name ## ]]`` markers and adds format instructions: the root
shows the fields' values, never the markers. ``SessionSpanProcessor`` runs on the provider,
before the exporter.
"""

from __future__ import annotations

import json

import dspy
import pytest
from dspy_loopback import LoopbackServer, adapter_reply
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from turn_text_support import assert_no_tracing_warnings, root_of
from turn_text_support import llm_spans as lm_spans

from convotel import TraceConfig, using_session, using_user
from convotel.config import REDACTED_VALUE
from convotel.dspy import DSPyInstrumentor

INPUT, OUTPUT = "input.value", "output.value"
SESSION, USER = "session.id", "user.id"
QUESTION = "And what is the capital of France?"
HISTORY = dspy.History(
    messages=[{"question": "What is the capital of Spain?", "answer": "Madrid."}]
)


class Chat(dspy.Signature):
    """Answer the user's question in the light of the conversation so far."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


@pytest.fixture
def tracer_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """The folder's instrumentation traces through the web service's provider."""
    return session_tracer_provider


def test_root_shows_the_question_and_the_answer_not_the_adapters_format(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-1"),
        using_user("u-1"),
    ):
        prediction = dspy.Predict(Chat)(question=QUESTION, history=HISTORY)

    (lm_span,) = lm_spans(spans)
    users = [
        key for key, value in (lm_span.attributes or {}).items() if value == "user"
    ]  # the history's question and the new one: a multi-message request
    assert len(users) == 2
    root = root_of(spans)
    assert root[INPUT] == QUESTION
    assert root[OUTPUT] == prediction.answer == f"answer to {QUESTION}"
    assert root["input.mime_type"] == root["output.mime_type"] == "text/plain"
    assert (root[SESSION], root[USER]) == ("d-1", "u-1")
    assert "[[ ##" not in root[INPUT] + root[OUTPUT]


async def test_async_call_gives_the_same_turn(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-async"),
    ):
        prediction = await dspy.Predict(Chat).acall(question=QUESTION, history=HISTORY)

    root = root_of(spans)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, prediction.answer)


async def test_streamed_answer_is_the_streamed_text(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    listener = dspy.streaming.StreamListener(signature_field_name="answer")
    program = dspy.streamify(dspy.Predict(Chat), stream_listeners=[listener])
    pieces: list[str] = []
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-stream"),
    ):
        async for value in program(question=QUESTION, history=HISTORY):
            if isinstance(value, dspy.streaming.StreamResponse):
                pieces.append(value.chunk)

    streamed = "".join(pieces)
    root = root_of(spans)
    assert streamed.strip() == f"answer to {QUESTION}"
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, streamed.strip())


def test_json_adapter_turn_shows_the_question_and_the_answer(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer, tracer: trace_api.Tracer
) -> None:
    llm_server.reply(json.dumps({"answer": "Paris."}))
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm, adapter=dspy.JSONAdapter()),
    ):
        prediction = dspy.Predict(Chat)(question=QUESTION, history=HISTORY)

    (lm_span,) = lm_spans(spans)
    assert (lm_span.attributes or {})[OUTPUT] == '{"answer": "Paris."}'
    root = root_of(spans)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, prediction.answer) == (QUESTION, "Paris.")


def test_an_image_input_shows_the_text_fields_only(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    class Describe(dspy.Signature):
        """Answer a question about a picture."""

        question: str = dspy.InputField()
        picture: dspy.Image = dspy.InputField()
        answer: str = dspy.OutputField()

    picture = dspy.Image(url="https://example.com/eiffel.jpg")
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
    ):
        prediction = dspy.Predict(Describe)(question="What is this tower?", picture=picture)

    root = root_of(spans)
    assert root[OUTPUT] == prediction.answer
    assert root[INPUT] == "What is this tower?"  # the picture's field holds no text


def test_react_turn_takes_the_first_calls_question_and_the_final_answer(
    spans: InMemorySpanExporter, lm: dspy.LM, llm_server: LoopbackServer, tracer: trace_api.Tracer
) -> None:
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"sunny in {city}"

    llm_server.reply(
        adapter_reply(
            next_thought="I should look it up.",
            next_tool_name="get_weather",
            next_tool_args=json.dumps({"city": "Paris"}),
        ),
        adapter_reply(next_thought="Done.", next_tool_name="finish", next_tool_args="{}"),
        adapter_reply(reasoning="The tool said so.", answer="It is sunny in Paris."),
    )
    agent = dspy.ReAct("question -> answer", tools=[get_weather], max_iters=3)
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-react"),
    ):
        prediction = agent(question="Weather in Paris?")

    assert len(lm_spans(spans)) == 3
    root = root_of(spans)
    assert root[INPUT] == "Weather in Paris?"  # the empty trajectory field counts for nothing
    assert root[OUTPUT] == prediction.answer == "It is sunny in Paris."


@pytest.mark.parametrize(
    ("config", "expected_input", "expected_output"),
    [
        (TraceConfig(hide_inputs=True, hide_outputs=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_input_text=True, hide_output_text=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_outputs=True), QUESTION, REDACTED_VALUE),
    ],
)
def test_hidden_text_never_reaches_the_root(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    lm: dspy.LM,
    tracer: trace_api.Tracer,
    config: TraceConfig,
    expected_input: str | None,
    expected_output: str | None,
) -> None:
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=config)
    try:
        with (
            tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
            dspy.context(lm=lm),
        ):
            dspy.Predict(Chat)(question=QUESTION, history=HISTORY)
    finally:
        instrumentor.uninstrument()

    root = root_of(span_exporter)
    assert (root.get(INPUT), root.get(OUTPUT)) == (expected_input, expected_output)
    if config.hide_inputs or config.hide_input_text:
        assert "Spain" not in repr(root)
        assert "France" not in repr(root)


@pytest.mark.parametrize("processor_options", [{"turn_text": False}])
def test_turn_text_off_writes_no_text_on_the_root(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-off"),
    ):
        dspy.Predict(Chat)(question=QUESTION, history=HISTORY)

    root = root_of(spans)
    assert INPUT not in root
    assert OUTPUT not in root
    assert root[SESSION] == "d-off"


@pytest.mark.parametrize("processor_options", [{"join_trace": False}])
def test_join_trace_off_leaves_the_root_out_of_the_session(
    spans: InMemorySpanExporter, lm: dspy.LM, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        dspy.context(lm=lm),
        using_session("d-no"),
    ):
        dspy.Predict(Chat)(question=QUESTION, history=HISTORY)

    root = root_of(spans)
    assert SESSION not in root
    assert root[INPUT] == QUESTION
    assert lm_spans(spans)[0].attributes[SESSION] == "d-no"  # type: ignore[index]


def test_a_model_call_that_is_its_traces_root_gets_nothing_written(
    spans: InMemorySpanExporter, lm: dspy.LM, caplog: pytest.LogCaptureFixture
) -> None:
    with dspy.context(lm=lm):
        lm(messages=[{"role": "user", "content": "[[ ## question ## ]]\nHi"}])

    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert (span.attributes or {})[INPUT].startswith("[")  # its own JSON messages, not ours
    assert_no_tracing_warnings(caplog)


def test_a_call_ending_after_its_root_writes_nothing_and_breaks_nothing(
    spans: InMemorySpanExporter,
    lm: dspy.LM,
    tracer: trace_api.Tracer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        request_context = context_api.get_current()
    token = context_api.attach(request_context)  # work the request left behind, run later
    try:
        with dspy.context(lm=lm):
            prediction = dspy.Predict(Chat)(question=QUESTION, history=HISTORY)
    finally:
        context_api.detach(token)

    assert prediction.answer == f"answer to {QUESTION}"
    root = root_of(spans)
    assert INPUT not in root
    assert OUTPUT not in root
    assert_no_tracing_warnings(caplog)


@pytest.mark.filterwarnings("ignore:Implementing custom LMs:DeprecationWarning")
def test_over_the_openai_sdk_one_model_call_writes_the_turn_once(
    spans: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    llm_server: LoopbackServer,
    tracer: trace_api.Tracer,
) -> None:
    from dspy_lms import OpenAIClientLM

    from convotel.openai import OpenAIInstrumentor

    provider_instrumentor = OpenAIInstrumentor()
    provider_instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        with (
            tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
            dspy.context(lm=OpenAIClientLM(llm_server.base_url)),
            using_session("d-oa"),
        ):
            prediction = dspy.Predict(Chat)(question=QUESTION, history=HISTORY)
    finally:
        provider_instrumentor.uninstrument()

    (llm,) = lm_spans(spans)  # the provider's span; DSPy's LM span became a CHAIN
    assert llm.name == "ChatCompletion"
    root = root_of(spans)
    assert (root[INPUT], root[OUTPUT], root[SESSION]) == (QUESTION, prediction.answer, "d-oa")
