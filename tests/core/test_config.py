"""TraceConfig: environment vs constructor, and what each option hides."""

from __future__ import annotations

import pytest
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import REDACTED_VALUE, TraceConfig
from convotel.spans import Tracing

IN_CONTENT = "llm.input_messages.0.message.content"
IN_TEXT_PART = "llm.input_messages.0.message.contents.0.message_content.text"
IN_IMAGE = "llm.input_messages.0.message.contents.1.message_content.image.image.url"
OUT_CONTENT = "llm.output_messages.0.message.content"
OUT_ROLE = "llm.output_messages.0.message.role"
VECTOR = "embedding.embeddings.0.embedding.vector"
EMBEDDED_TEXT = "embedding.embeddings.0.embedding.text"
TOOL_SCHEMA = "llm.tools.0.tool.json_schema"
PROMPT = "llm.prompts"
PROMPT_TEXT = "llm.prompts.0.prompt.text"
CHOICE_TEXT = "llm.choices.0.completion.text"
DOC_CONTENT = "retrieval.documents.0.document.content"
DOC_METADATA = "retrieval.documents.0.document.metadata"
DOC_ID = "retrieval.documents.0.document.id"
DOC_SCORE = "retrieval.documents.0.document.score"
IN_SPAN_IMAGE = "input.images.0.image.url"
OUT_IMAGE = "output.images.0.image.url"
#: OpenInference's newer switches and their environment variables.
NEWER_SWITCHES = {
    "hide_llm_tools": "OPENINFERENCE_HIDE_LLM_TOOLS",
    "hide_prompts": "OPENINFERENCE_HIDE_PROMPTS",
    "hide_choices": "OPENINFERENCE_HIDE_CHOICES",
    "hide_embeddings_text": "OPENINFERENCE_HIDE_EMBEDDINGS_TEXT",
    "hide_embeddings_vectors": "OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS",
    "hide_retrieval_documents": "OPENINFERENCE_HIDE_RETRIEVAL_DOCUMENTS",
}
#: Keys of every kind a switch may hide, and some it must not.
KEYS = (
    "input.value",
    "input.mime_type",
    "output.value",
    "output.mime_type",
    IN_CONTENT,
    IN_TEXT_PART,
    IN_IMAGE,
    OUT_CONTENT,
    OUT_ROLE,
    VECTOR,
    EMBEDDED_TEXT,
    "embedding.model_name",
    TOOL_SCHEMA,
    PROMPT,
    PROMPT_TEXT,
    "llm.prompt_template.template",
    CHOICE_TEXT,
    DOC_CONTENT,
    DOC_METADATA,
    DOC_ID,
    DOC_SCORE,
    "reranker.query",
    "reranker.input_documents.0.document.content",
    "reranker.output_documents.0.document.content",
    IN_SPAN_IMAGE,
    OUT_IMAGE,
    "llm.invocation_parameters",
    "llm.model_name",
    "session.id",
)


def test_defaults_keep_everything() -> None:
    config = TraceConfig()
    for key in ("input.value", IN_CONTENT, OUT_CONTENT, VECTOR, "llm.invocation_parameters"):
        assert config.mask(key, "v") == "v"
    assert not config.hides_anything


def test_environment_is_read_with_openinference_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_INPUTS", "true")
    monkeypatch.setenv("OPENINFERENCE_BASE64_IMAGE_MAX_LENGTH", "10")
    config = TraceConfig()
    assert config.hide_inputs is True
    assert config.base64_image_max_length == 10


@pytest.mark.parametrize(
    ("environment", "constructor", "expected"),
    [
        (None, None, True),  # streamed turns count their tokens by default
        ("false", None, False),
        ("0", None, False),
        ("true", False, False),
        ("not-a-flag", None, True),  # ignored with a warning
    ],
)
def test_stream_usage_is_requested_by_default_with_an_opt_out(
    monkeypatch: pytest.MonkeyPatch,
    environment: str | None,
    constructor: bool | None,
    expected: bool,
) -> None:
    if environment is not None:
        monkeypatch.setenv("CONVOTEL_REQUEST_STREAM_USAGE", environment)
    else:
        monkeypatch.delenv("CONVOTEL_REQUEST_STREAM_USAGE", raising=False)
    assert TraceConfig(request_stream_usage=constructor).request_stream_usage is expected


def test_constructor_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_INPUTS", "true")
    monkeypatch.setenv("OPENINFERENCE_HIDE_OUTPUTS", "true")
    config = TraceConfig(hide_inputs=False)
    assert config.hide_inputs is False
    assert config.hide_outputs is True


def test_bad_environment_values_are_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_OUTPUTS", "maybe")
    monkeypatch.setenv("OPENINFERENCE_BASE64_IMAGE_MAX_LENGTH", "lots")
    config = TraceConfig()
    assert config.hide_outputs is False
    assert config.base64_image_max_length == 32_000
    assert "OPENINFERENCE_HIDE_OUTPUTS" in caplog.text


@pytest.mark.parametrize(
    ("option", "key", "expected"),
    [
        ("hide_inputs", "input.value", REDACTED_VALUE),
        ("hide_inputs", "input.mime_type", None),
        ("hide_inputs", IN_CONTENT, None),
        ("hide_inputs", "llm.tools.0.tool.json_schema", None),
        ("hide_inputs", "embedding.embeddings.0.embedding.text", REDACTED_VALUE),
        ("hide_outputs", "output.value", REDACTED_VALUE),
        ("hide_outputs", OUT_CONTENT, None),
        ("hide_outputs", "retrieval.documents.0.document.content", REDACTED_VALUE),
        ("hide_input_messages", IN_CONTENT, None),
        ("hide_output_messages", OUT_ROLE, None),
        ("hide_input_text", IN_CONTENT, REDACTED_VALUE),
        ("hide_input_text", IN_TEXT_PART, REDACTED_VALUE),
        ("hide_output_text", OUT_CONTENT, REDACTED_VALUE),
        ("hide_input_images", IN_IMAGE, None),
        ("hide_embedding_vectors", VECTOR, REDACTED_VALUE),
        ("hide_llm_invocation_parameters", "llm.invocation_parameters", None),
        ("hide_outputs", DOC_METADATA, REDACTED_VALUE),
        ("hide_outputs", OUT_IMAGE, None),
        ("hide_inputs", IN_SPAN_IMAGE, None),
        ("hide_input_images", IN_SPAN_IMAGE, None),
        ("hide_embeddings_vectors", VECTOR, REDACTED_VALUE),
        ("hide_embeddings_text", EMBEDDED_TEXT, REDACTED_VALUE),
        ("hide_llm_tools", TOOL_SCHEMA, None),
        ("hide_prompts", PROMPT, REDACTED_VALUE),
        ("hide_prompts", PROMPT_TEXT, REDACTED_VALUE),
        ("hide_choices", CHOICE_TEXT, REDACTED_VALUE),
        ("hide_retrieval_documents", DOC_CONTENT, REDACTED_VALUE),
        ("hide_retrieval_documents", DOC_METADATA, REDACTED_VALUE),
    ],
)
def test_each_hide_option(option: str, key: str, expected: object) -> None:
    config = TraceConfig(**{option: True})  # type: ignore[arg-type]
    assert config.mask(key, "value") == expected
    assert config.mask("session.id", "s") == "s"
    assert config.hides_anything


def test_hide_input_text_keeps_roles() -> None:
    config = TraceConfig(hide_input_text=True)
    assert config.mask("llm.input_messages.0.message.role", "user") == "user"


def test_long_base64_images_are_redacted_but_urls_kept() -> None:
    config = TraceConfig(base64_image_max_length=30)
    assert config.mask(IN_IMAGE, "data:image/png;base64," + "A" * 50) == REDACTED_VALUE
    assert config.mask(IN_IMAGE, "data:image/png;base64,AA") == "data:image/png;base64,AA"
    assert config.mask(IN_IMAGE, "https://example.com/" + "a" * 50).startswith("https://")


def test_max_value_length_truncates_strings() -> None:
    config = TraceConfig(max_value_length=5)
    assert config.mask("output.value", "abcdefgh") == "abcde"
    assert config.mask("llm.token_count.total", 123456) == 123456


@pytest.mark.parametrize(("option", "variable"), sorted(NEWER_SWITCHES.items()))
def test_newer_switches_read_their_openinference_variable_and_the_constructor_wins(
    monkeypatch: pytest.MonkeyPatch, option: str, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert getattr(TraceConfig(), option) is False  # off by default, like OpenInference's
    monkeypatch.setenv(variable, "true")
    assert getattr(TraceConfig(), option) is True
    assert getattr(TraceConfig(**{option: False}), option) is False  # type: ignore[arg-type]
    monkeypatch.setenv(variable, "false")
    assert getattr(TraceConfig(**{option: True}), option) is True  # type: ignore[arg-type]


def test_embeddings_text_from_the_environment_hides_embedded_texts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_EMBEDDINGS_TEXT", "true")
    config = TraceConfig()
    assert config.mask(EMBEDDED_TEXT, "my diagnosis") == REDACTED_VALUE
    assert config.mask(VECTOR, (0.1, 0.2)) == (0.1, 0.2)
    assert config.mask("input.value", "my diagnosis") == "my diagnosis"  # hide_inputs' job


@pytest.mark.parametrize(
    ("option", "hidden"),
    [
        ("hide_llm_tools", {TOOL_SCHEMA}),
        ("hide_prompts", {PROMPT, PROMPT_TEXT}),
        ("hide_choices", {CHOICE_TEXT}),
        ("hide_embeddings_text", {EMBEDDED_TEXT}),
        ("hide_embeddings_vectors", {VECTOR}),
        ("hide_retrieval_documents", {DOC_CONTENT, DOC_METADATA}),
    ],
)
def test_a_newer_switch_hides_its_keys_and_nothing_else(option: str, hidden: set[str]) -> None:
    config = TraceConfig(**{option: True})  # type: ignore[arg-type]
    changed = {key for key in KEYS if config.mask(key, "value") != "value"}
    assert changed == hidden
    assert not any(config.keeps_unchanged(key) for key in hidden)  # never the fast path
    images = {key for key in KEYS if key.endswith(".image.url")}  # checked for their length
    assert all(config.keeps_unchanged(key) for key in set(KEYS) - hidden - images)


def test_hide_inputs_and_hide_outputs_imply_the_newer_switches() -> None:
    inputs = TraceConfig(hide_inputs=True)
    assert inputs.mask(TOOL_SCHEMA, "v") is None
    assert inputs.mask(PROMPT_TEXT, "v") == REDACTED_VALUE
    assert inputs.mask(EMBEDDED_TEXT, "v") == REDACTED_VALUE
    outputs = TraceConfig(hide_outputs=True)
    assert outputs.mask(CHOICE_TEXT, "v") == REDACTED_VALUE
    assert outputs.mask(DOC_CONTENT, "v") == REDACTED_VALUE
    assert outputs.mask(DOC_METADATA, "{}") == REDACTED_VALUE
    assert outputs.mask(DOC_ID, "d1") == "d1"
    assert outputs.mask(DOC_SCORE, 0.5) == 0.5


def test_either_name_of_hide_embeddings_vectors_hides_vectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_EMBEDDING_VECTORS", "true")  # the deprecated name
    assert TraceConfig().mask(VECTOR, (0.5,)) == REDACTED_VALUE
    monkeypatch.delenv("OPENINFERENCE_HIDE_EMBEDDING_VECTORS")
    monkeypatch.setenv("OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS", "true")
    assert TraceConfig().mask(VECTOR, (0.5,)) == REDACTED_VALUE


@pytest.mark.parametrize(
    "option",
    sorted(
        name
        for name in TraceConfig.__dataclass_fields__
        if name.startswith("hide_") and name not in {"hide_inputs", "hide_outputs"}
    ),
)
def test_each_hide_switch_alone_decides_like_openinference(option: str) -> None:
    """Alone, every ``hide_*`` switch drops and redacts what OpenInference's does, with the same
    marker. (``hide_inputs``/``hide_outputs`` hide more than OpenInference's: the README's
    "Differences from OpenInference".)"""
    oi_config = pytest.importorskip("openinference.instrumentation.config")
    if option not in oi_config.TraceConfig.__dataclass_fields__:
        pytest.skip(f"this OpenInference release has no {option}")
    if not hasattr(SpanAttributes, "INPUT_IMAGES"):  # OpenInference's mask reads it
        pytest.skip(
            "the installed openinference-instrumentation needs a newer "
            "openinference-semantic-conventions than this environment's (the core's floor)"
        )
    ours = TraceConfig(**{option: True})  # type: ignore[arg-type]
    theirs = oi_config.TraceConfig(**{option: True})
    for key in KEYS:
        assert ours.mask(key, "value") == theirs.mask(key, "value"), key
    assert oi_config.REDACTED_VALUE == REDACTED_VALUE


def test_hidden_keys_stay_hidden_through_a_calls_fast_path(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    config = TraceConfig(**dict.fromkeys(NEWER_SWITCHES, True))  # type: ignore[arg-type]
    tracing = Tracing(tracer_provider.get_tracer("t"), config)
    pairs = [(TOOL_SCHEMA, "{}"), (PROMPT_TEXT, "p"), (CHOICE_TEXT, "c"), (EMBEDDED_TEXT, "e")]
    pairs += [(DOC_CONTENT, "d"), (DOC_METADATA, "{}"), (VECTOR, [0.5]), (DOC_ID, "d1")]
    for _ in range(2):  # the second span would take the fast path for keys cached as unchanged
        call = tracing.start("call", "LLM")
        call.set_attributes(pairs)
        call.set_attributes(pairs)
        call.end()
    for span in span_exporter.get_finished_spans():
        attributes = dict(span.attributes or {})
        assert TOOL_SCHEMA not in attributes
        for key in (PROMPT_TEXT, CHOICE_TEXT, EMBEDDED_TEXT, DOC_CONTENT, DOC_METADATA, VECTOR):
            assert attributes[key] == REDACTED_VALUE, key
        assert attributes[DOC_ID] == "d1"
    assert tracing.unchanged_keys == {DOC_ID}
