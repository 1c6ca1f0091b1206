"""Bad input never reaches the caller: the context helpers (``using_*`` and ``set_*``,
lenient and strict) set only valid values. See ``property_support``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openinference.semconv.trace import SpanAttributes
from opentelemetry import context as context_api
from property_support import LLM, PYDANTIC_WARNINGS, SETTINGS, Recorder, caller_context_kept
from reliability_values import LEAVES, hostile_objects, odd_mappings, odd_values

from convotel import (
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

pytestmark = PYDANTIC_WARNINGS


# --- context helpers ------------------------------------------------------------------------


def _expected_id(value: Any) -> str | None:
    """The id a session or user id argument sets: a non-blank text (ints and UUIDs as text),
    at most 256 characters; ``None`` (nothing set) for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            value = str(value)
        except ValueError:  # too long to print
            return None
    if isinstance(value, str) and value.strip():
        return value[:256]
    return None


def _context_is_valid() -> None:
    for key, value in get_attributes_from_context():
        assert isinstance(value, str | list), (key, value)
        if key in (SpanAttributes.SESSION_ID, SpanAttributes.USER_ID):
            assert isinstance(value, str)
            assert value.strip()
            assert len(value) <= 256


@SETTINGS
@given(
    session=LEAVES | odd_values(3),
    user=LEAVES | odd_values(3),
    metadata=odd_mappings(8) | hostile_objects() | odd_values(8),
    tags=st.lists(LEAVES, max_size=3) | hostile_objects() | odd_values(4),
    template=LEAVES | odd_values(2),
    variables=odd_mappings(6) | hostile_objects() | odd_values(6),
    version=LEAVES | odd_values(2),
)
def test_context_helpers_never_raise_and_set_only_valid_values(
    session: Any, user: Any, metadata: Any, tags: Any, template: Any, variables: Any, version: Any
) -> None:
    recorder = Recorder()
    ran = []
    with warnings.catch_warnings(), caller_context_kept():
        warnings.simplefilter("ignore", InvalidContextValueWarning)
        scopes = [
            using_session(session),
            using_user(user),
            using_metadata(metadata),
            using_tags(tags),
            using_prompt_template(template=template, variables=variables, version=version),
            using_attributes(
                session_id=session,
                user_id=user,
                metadata=metadata,
                tags=tags,
                prompt_template=template,
                prompt_template_variables=variables,
                prompt_template_version=version,
            ),
        ]
        with scopes[0], scopes[1]:
            ids = dict(get_attributes_from_context())
            assert ids.get(SpanAttributes.SESSION_ID) == _expected_id(session)
            assert ids.get(SpanAttributes.USER_ID) == _expected_id(user)
        for scope in scopes:
            with scope:
                _context_is_valid()
                recorder.tracing.start("inside", LLM).end()
                ran.append(scope)

            @scope
            def decorated() -> str:
                _context_is_valid()
                return "ran"

            assert decorated() == "ran"
        ctx = context_api.get_current()
        for updated in (
            set_session(ctx, session),
            set_user(ctx, user),
            set_metadata(ctx, metadata),
            set_tags(ctx, tags),
            set_prompt_template(ctx, template, variables, version),
        ):
            token = context_api.attach(updated)
            try:
                _context_is_valid()
            finally:
                context_api.detach(token)

    assert ran == scopes
    assert recorder.invalid() == []


@SETTINGS
@given(
    session=LEAVES | odd_values(3),
    metadata=odd_mappings(6) | hostile_objects() | odd_values(6),
    tags=st.lists(LEAVES, max_size=3) | hostile_objects() | odd_values(3),
)
def test_strict_context_helpers_raise_a_value_error_exactly_where_they_would_warn(
    session: Any, metadata: Any, tags: Any
) -> None:
    helpers: list[Callable[[bool], object]] = [
        lambda strict: using_session(session, strict=strict),
        lambda strict: using_metadata(metadata, strict=strict),
        lambda strict: using_tags(tags, strict=strict),
        lambda strict: set_session(context_api.get_current(), session, strict=strict),
    ]
    for helper in helpers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            helper(False)
        if any(issubclass(w.category, InvalidContextValueWarning) for w in caught):
            with pytest.raises(ValueError, match="convotel: "):
                helper(True)
        else:
            helper(True)
