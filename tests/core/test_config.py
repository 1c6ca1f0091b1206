"""TraceConfig: environment vs constructor, and what each option hides."""

from __future__ import annotations

import pytest

from convotel import REDACTED_VALUE, TraceConfig

IN_CONTENT = "llm.input_messages.0.message.content"
IN_TEXT_PART = "llm.input_messages.0.message.contents.0.message_content.text"
IN_IMAGE = "llm.input_messages.0.message.contents.1.message_content.image.image.url"
OUT_CONTENT = "llm.output_messages.0.message.content"
OUT_ROLE = "llm.output_messages.0.message.role"
VECTOR = "embedding.embeddings.0.embedding.vector"


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
