"""The context API: ids in and out of the OpenTelemetry context, nesting, bad input."""

from __future__ import annotations

import json
import uuid
import warnings
from typing import Any

import pytest
from opentelemetry import context as context_api

from convotel import (
    MAX_ID_LENGTH,
    InvalidContextValueWarning,
    get_attributes_from_context,
    set_metadata,
    set_prompt_template,
    set_session,
    set_tags,
    set_user,
    using_attributes,
    using_metadata,
    using_prompt_template,
    using_session,
    using_tags,
    using_user,
)


def current() -> dict[str, Any]:
    return dict(get_attributes_from_context())


def test_using_session_and_user_set_ids_only_inside_the_block() -> None:
    with using_session("s-1"), using_user("u-1"):
        assert current() == {"session.id": "s-1", "user.id": "u-1"}
    assert current() == {}


def test_nested_session_overrides_and_restores() -> None:
    with using_session("outer"):
        with using_session("inner"):
            assert current()["session.id"] == "inner"
        assert current()["session.id"] == "outer"
    assert current() == {}


def test_nested_metadata_merges_with_inner_keys_winning() -> None:
    with using_metadata({"a": 1, "b": 1}):
        with using_metadata({"b": 2, "c": 3}):
            assert json.loads(current()["metadata"]) == {"a": 1, "b": 2, "c": 3}
        assert json.loads(current()["metadata"]) == {"a": 1, "b": 1}


def test_nested_tags_extend_without_duplicates() -> None:
    with using_tags(["a", "b"]):
        with using_tags(["b", "c"]):
            assert current()["tag.tags"] == ["a", "b", "c"]
        assert current()["tag.tags"] == ["a", "b"]


def test_prompt_template_with_variables_and_version() -> None:
    with using_prompt_template(template="Hi {name}", variables={"name": "Ada"}, version="v2"):
        attributes = current()
    assert attributes["llm.prompt_template.template"] == "Hi {name}"
    assert json.loads(attributes["llm.prompt_template.variables"]) == {"name": "Ada"}
    assert attributes["llm.prompt_template.version"] == "v2"


def test_using_attributes_sets_everything_given_and_leaves_the_rest() -> None:
    with (
        using_user("outer-user"),
        using_attributes(session_id="s", metadata={"k": "v"}, tags=["t"]),
    ):
        attributes = current()
    assert attributes == {
        "session.id": "s",
        "user.id": "outer-user",
        "metadata": '{"k": "v"}',
        "tag.tags": ["t"],
    }


@pytest.mark.parametrize(
    ("bad_id", "problem"),
    [
        ("", "an empty string"),
        ("   \t", "a whitespace-only string"),
        (None, "got None"),
        ({"id": 1}, "got dict"),
        (b"bytes", "got bytes"),
        (True, "got a bool"),
        (["s"], "got list"),
        (1.5, "got float"),
    ],
)
def test_bad_session_id_warns_once_sets_nothing_and_code_still_runs(
    bad_id: object, problem: str
) -> None:
    ran = []
    with pytest.warns(InvalidContextValueWarning) as caught:
        scope = using_session(bad_id)
    with scope:
        ran.append(current())
    assert ran == [{}]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "session_id" in message
    assert problem in message
    assert "not set" in message


def test_bad_user_id_in_using_attributes_keeps_the_good_session() -> None:
    with pytest.warns(InvalidContextValueWarning, match="user_id"):
        scope = using_attributes(session_id="s", user_id="")
    with scope:
        assert current() == {"session.id": "s"}


def test_bad_id_keeps_the_enclosing_id() -> None:
    with using_session("outer"):
        with pytest.warns(InvalidContextValueWarning):
            scope = using_session("")
        with scope:
            assert current()["session.id"] == "outer"


@pytest.mark.parametrize(
    ("raw", "expected"), [(42, "42"), (uuid.UUID(int=7), str(uuid.UUID(int=7)))]
)
def test_int_and_uuid_ids_are_coerced_to_str(raw: object, expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with using_session(raw), using_user(raw):
            assert current() == {"session.id": expected, "user.id": expected}


def test_overlong_id_is_truncated_with_a_warning() -> None:
    with pytest.warns(InvalidContextValueWarning, match="truncated"):
        scope = using_session("x" * (MAX_ID_LENGTH + 10))
    with scope:
        assert current()["session.id"] == "x" * MAX_ID_LENGTH


def test_strict_turns_the_warning_into_value_error() -> None:
    with pytest.raises(ValueError, match="session_id must be a non-empty string"):
        using_session("", strict=True)
    with pytest.raises(ValueError, match="user_id"):
        set_user(context_api.get_current(), None, strict=True)


def test_strict_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOTEL_STRICT", "true")
    with pytest.raises(ValueError, match="tags"):
        using_tags("not-a-list")  # type: ignore[arg-type]
    with pytest.warns(InvalidContextValueWarning), using_session("", strict=False):
        assert dict(get_attributes_from_context()) == {}  # strict=False beats the environment


@pytest.mark.parametrize(
    "call",
    [
        lambda: using_metadata(["not", "a", "mapping"]),  # type: ignore[arg-type]
        lambda: using_metadata({1: "non-str key"}),  # type: ignore[dict-item]
        lambda: using_tags("abc"),  # type: ignore[arg-type]
        lambda: using_tags(["ok", ""]),
        lambda: using_tags(["ok", 3]),  # type: ignore[list-item]
        lambda: using_prompt_template(template=""),
        lambda: using_prompt_template(template=None),  # type: ignore[arg-type]
    ],
)
def test_bad_metadata_tags_and_templates_warn_and_set_nothing(call: Any) -> None:
    with pytest.warns(InvalidContextValueWarning):
        scope = call()
    with scope:
        assert current() == {}


def test_functional_setters_return_new_contexts() -> None:
    base = context_api.get_current()
    ctx = set_session(base, "s")
    ctx = set_user(ctx, "u")
    ctx = set_metadata(ctx, {"a": 1})
    ctx = set_metadata(ctx, {"b": 2})
    ctx = set_tags(ctx, ["x"])
    ctx = set_prompt_template(ctx, "T", {"v": 1}, "1")
    attributes = dict(get_attributes_from_context(ctx))
    assert attributes["session.id"] == "s"
    assert attributes["user.id"] == "u"
    assert json.loads(attributes["metadata"]) == {"a": 1, "b": 2}
    assert attributes["tag.tags"] == ["x"]
    assert attributes["llm.prompt_template.version"] == "1"
    assert current() == {}  # the current context is untouched
    token = context_api.attach(ctx)
    try:
        assert current()["session.id"] == "s"
    finally:
        context_api.detach(token)


def test_functional_setter_with_bad_id_returns_the_same_context() -> None:
    base = set_session(context_api.get_current(), "kept")
    with pytest.warns(InvalidContextValueWarning):
        assert set_session(base, "  ") is base


def test_context_values_of_the_wrong_type_are_not_reported() -> None:
    ctx = context_api.set_value("session.id", 12, context_api.get_current())
    ctx = context_api.set_value("tag.tags", ["ok", 3], ctx)
    assert dict(get_attributes_from_context(ctx)) == {}
