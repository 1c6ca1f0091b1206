"""The shared OpenAI-shaped payload reader and the message builders every adapter writes with."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from openinference.semconv.trace import MessageAttributes, SpanAttributes

from convotel import parameters
from convotel.attributes import (
    ContentPart,
    Message,
    ToolCall,
    embedding_attributes,
    embedding_summary,
    invocation_parameters_json,
    llm_input_value_attributes,
    llm_output_value_attributes,
    message_attributes,
    usage_attributes,
)
from convotel.payloads import (
    chat_message,
    chat_messages,
    plain_chat_input_attributes,
    plain_reply_attributes,
)

IN = SpanAttributes.LLM_INPUT_MESSAGES
FUNCTION_NAME = MessageAttributes.MESSAGE_FUNCTION_CALL_NAME
FUNCTION_ARGUMENTS = MessageAttributes.MESSAGE_FUNCTION_CALL_ARGUMENTS_JSON
CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "function_call": CALL},  # a request dict
        SimpleNamespace(role="assistant", content=None, function_call=SimpleNamespace(**CALL)),
    ],
    ids=["dict", "sdk model"],
)
def test_a_legacy_function_call_is_read_and_recorded(message: Any) -> None:
    read = chat_message(message)
    assert read.function_call == ToolCall(None, "get_weather", '{"city":"Paris"}')
    attributes = dict(message_attributes(IN, [read]))
    assert attributes[f"{IN}.0.{FUNCTION_NAME}"] == "get_weather"
    assert attributes[f"{IN}.0.{FUNCTION_ARGUMENTS}"] == '{"city":"Paris"}'


def test_dict_function_call_arguments_are_recorded_as_json() -> None:
    call = {"name": "f", "arguments": {"a": 1}}
    read = chat_message({"role": "assistant", "function_call": call})
    assert read.function_call is not None
    assert json.loads(read.function_call.arguments or "") == {"a": 1}


@pytest.mark.parametrize("garbage", [None, "not a call", 7, {}])
def test_a_function_call_without_name_or_arguments_is_none(garbage: object) -> None:
    assert chat_message({"role": "assistant", "function_call": garbage}).function_call is None


def test_messages_are_numbered_from_the_first_index_given() -> None:
    attributes = dict(message_attributes(IN, [Message("user", "hi")], first_index=1))
    assert attributes == {
        f"{IN}.1.{MessageAttributes.MESSAGE_ROLE}": "user",
        f"{IN}.1.{MessageAttributes.MESSAGE_CONTENT}": "hi",
    }


def _input_value(messages: list[Message]) -> dict[str, Any]:
    return dict(llm_input_value_attributes(messages))


def test_input_value_without_any_text_is_the_newest_messages_calls_or_part_types() -> None:
    calls = Message("assistant", tool_calls=[ToolCall("c1", "f", "{}")])
    legacy = Message("assistant", function_call=ToolCall(None, "f", "{}"))
    image = Message("user", parts=[ContentPart("image", image_url="data:image/png;base64,AAAA")])
    assert json.loads(_input_value([image, calls])[SpanAttributes.INPUT_VALUE]) == [
        {"id": "c1", "name": "f", "arguments": "{}"}
    ]
    assert json.loads(_input_value([legacy])[SpanAttributes.INPUT_VALUE]) == [
        {"name": "f", "arguments": "{}"}
    ]
    value = _input_value([calls, image])[SpanAttributes.INPUT_VALUE]
    assert json.loads(value) == [{"type": "image"}]  # never the image itself
    assert _input_value([]) == {}
    assert _input_value([calls, Message("tool", "18°C")])[SpanAttributes.INPUT_VALUE] == "18°C"


def test_output_value_of_a_reply_without_text_or_calls_is_empty_text() -> None:
    empty = dict(llm_output_value_attributes([Message("assistant", "")]))
    assert empty[SpanAttributes.OUTPUT_VALUE] == ""
    assert dict(llm_output_value_attributes([])) == {}  # no reply (a stream closed at once)
    replied = dict(llm_output_value_attributes([], replied=True))  # a response without messages
    assert replied[SpanAttributes.OUTPUT_VALUE] == ""


def test_embedding_output_value_counts_vectors_and_their_dimensions() -> None:
    assert embedding_summary([[0.1, 0.2, 0.3]]) == "1 vector of 3 dimensions"
    assert embedding_summary([[0.1], [0.2]]) == "2 vectors of 1 dimension"
    assert embedding_summary(["AAAAAA==", "AAAAAA=="]) == "2 vectors"
    attributes = dict(embedding_attributes(vectors=["AAAAAA=="]))  # base64: counted, not recorded
    assert attributes == {
        SpanAttributes.OUTPUT_VALUE: "1 vector",
        SpanAttributes.OUTPUT_MIME_TYPE: "text/plain",
    }
    assert SpanAttributes.OUTPUT_VALUE not in dict(embedding_attributes(texts=["cat"]))


def test_invocation_parameters_json_tells_equal_numbers_of_other_types_apart() -> None:
    # 1 == 1.0 == True: the remembered JSON of one must never stand for another.
    for _ in range(2):
        assert invocation_parameters_json({"n": 1}) == '{"n": 1}'
        assert invocation_parameters_json({"n": 1.0}) == '{"n": 1.0}'
        assert invocation_parameters_json({"n": True}) == '{"n": true}'
        assert invocation_parameters_json({"n": "1"}) == '{"n": "1"}'


def test_invocation_parameters_json_skips_secrets_sentinels_and_exclusions() -> None:
    class NotGiven:
        pass

    parameters = {"model": "m", "api_key": "sk-x", "seed": None, "top_p": NotGiven(), "x": 2}
    assert invocation_parameters_json(parameters, frozenset({"x"})) == '{"model": "m"}'
    assert invocation_parameters_json({"api_key": "sk-x", "seed": None}) is None


def test_invocation_parameters_json_of_objects_is_not_remembered_and_stays_current() -> None:
    stop = ["\n"]
    assert invocation_parameters_json({"stop": stop}) == '{"stop": ["\\n"]}'
    stop.append("END")  # a mutable value: its JSON is taken anew each call
    assert invocation_parameters_json({"stop": stop}) == '{"stop": ["\\n", "END"]}'


def test_remembered_invocation_parameters_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parameters, "_PARAMETERS_JSON", {})
    for seed in range(parameters._MAX_PARAMETERS_JSON * 3):
        assert invocation_parameters_json({"seed": seed}) == f'{{"seed": {seed}}}'
    assert len(parameters._PARAMETERS_JSON) <= parameters._MAX_PARAMETERS_JSON
    parameters._PARAMETERS_JSON.clear()
    suffix = "x" * (parameters._MAX_REMEMBERED_TEXT + 1)  # long text is encoded, not kept
    assert invocation_parameters_json({"suffix": suffix}) == f'{{"suffix": "{suffix}"}}'
    assert not parameters._PARAMETERS_JSON


def test_usage_attributes_keep_integers_and_derive_the_total() -> None:
    found = dict(usage_attributes(prompt=3, completion=4, cache_read=0, reasoning=True))
    assert found == {
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: 3,
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: 4,
        SpanAttributes.LLM_TOKEN_COUNT_TOTAL: 7,
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ: 0,
    }
    assert dict(usage_attributes(prompt=3, completion=1.5)) == {  # type: ignore[arg-type]
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: 3
    }


USER = {"role": "user", "content": "Hi"}
PLAIN_REQUESTS: list[Any] = [
    [USER],
    [{"role": "system", "content": "Be brief."}, USER],
    [USER, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Lisbon?"}],
    # not the plain shape: the general reader answers (None here)
    [USER, {"role": "assistant", "content": "Hello"}],  # the last one is not the user's
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    [{"role": "user", "content": "Hi", "name": "ann"}],
    [{"role": "tool", "content": "42", "tool_call_id": "c1"}],
    [SimpleNamespace(role="user", content="Hi")],
    [],
    (USER,),
    None,
]


@pytest.mark.parametrize("index", range(len(PLAIN_REQUESTS)))
def test_the_plain_request_reader_says_what_the_general_one_says(index: int) -> None:
    messages = PLAIN_REQUESTS[index]
    read = chat_messages(messages)
    general = [*message_attributes(IN, read), *llm_input_value_attributes(read)]
    plain = plain_chat_input_attributes(messages)
    assert plain is None or plain == general
    assert (plain is not None) == (index < 3)  # the first three have the plain shape


PLAIN_REPLIES: list[Any] = [
    {"role": "assistant", "content": "Lisbon."},
    SimpleNamespace(role="assistant", content="Lisbon.", tool_calls=None, function_call=None),
    {"role": "assistant", "content": "Lisbon.", "refusal": None, "tool_calls": []},
    # not a text-only reply: the general reader answers
    {"role": "assistant", "content": None, "refusal": "I cannot."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": CALL}]},
    {"role": "assistant", "content": "Calling", "tool_calls": [{"id": "c", "function": CALL}]},
    {"role": "assistant", "content": None, "function_call": CALL},
    {"content": "no role"},
    None,
]


@pytest.mark.parametrize("index", range(len(PLAIN_REPLIES)))
def test_the_plain_reply_reader_says_what_the_general_one_says(index: int) -> None:
    reply = PLAIN_REPLIES[index]
    read = [chat_message(reply)]
    general = [*message_attributes(SpanAttributes.LLM_OUTPUT_MESSAGES, read)]
    general_value = [*llm_output_value_attributes(read, replied=True)]
    plain = plain_reply_attributes(reply)
    assert plain is None or plain == (general, general_value)
    assert (plain is not None) == (index < 3)  # the first three are text-only replies
