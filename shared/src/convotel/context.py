"""Session, user and request attributes carried in the OpenTelemetry ``Context``.

The context keys are the OpenInference attribute names themselves (``"session.id"``,
``"user.id"``, ``"metadata"``, ...), stored with ``opentelemetry.context.set_value`` in the same
encoding OpenInference uses (metadata and prompt-template variables as JSON strings, tags as a list
of strings). Ids set with ``openinference.instrumentation.using_session`` are therefore honoured by
convotel and vice versa.

Every ``using_*`` helper is a context manager *and* a decorator for plain, ``async def``, generator
and async-generator functions. Nesting rules:

* ``using_session`` / ``using_user`` / ``using_prompt_template``: the inner value overrides the
  outer one inside the block; the outer value is restored on exit.
* ``using_metadata``: merged with the enclosing metadata, inner keys win.
* ``using_tags``: appended to the enclosing tags (duplicates dropped, order kept).

Bad input never crashes and never sets a bogus value: an empty or whitespace-only id, ``None``,
``bytes``, a ``dict`` or any other non-string id emits one :class:`InvalidContextValueWarning`
(through :mod:`warnings`, so the usual filters apply) naming the problem, nothing is set, and the
wrapped code still runs. ``int`` and :class:`uuid.UUID` ids are converted to ``str``. Ids longer
than :data:`MAX_ID_LENGTH` characters are truncated (with a warning). ``strict=True`` (or the
environment variable ``CONVOTEL_STRICT=true``) turns every such warning into a ``ValueError``.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import (
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

from openinference.semconv.trace import SpanAttributes
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from convotel.context_scope import ContextScope, ContextUpdate
from convotel.json_encoding import safe_json_dumps
from convotel.pseudonyms import recorded_user_id

__all__ = [
    "CONTEXT_ATTRIBUTES",
    "MAX_ID_LENGTH",
    "InvalidContextValueWarning",
    "get_attributes_from_context",
    "set_metadata",
    "set_prompt_template",
    "set_session",
    "set_tags",
    "set_user",
    "using_attributes",
    "using_metadata",
    "using_prompt_template",
    "using_session",
    "using_tags",
    "using_user",
]

#: Longest session or user id kept; longer ids are truncated to this many characters.
MAX_ID_LENGTH = 256

SESSION_ID = SpanAttributes.SESSION_ID
USER_ID = SpanAttributes.USER_ID
METADATA = SpanAttributes.METADATA
TAGS = SpanAttributes.TAG_TAGS
PROMPT_TEMPLATE = SpanAttributes.LLM_PROMPT_TEMPLATE
PROMPT_TEMPLATE_VERSION = SpanAttributes.LLM_PROMPT_TEMPLATE_VERSION
PROMPT_TEMPLATE_VARIABLES = SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES

#: The context keys convotel reads; they double as the span attribute names.
CONTEXT_ATTRIBUTES: tuple[str, ...] = (
    SESSION_ID,
    USER_ID,
    METADATA,
    TAGS,
    PROMPT_TEMPLATE,
    PROMPT_TEMPLATE_VERSION,
    PROMPT_TEMPLATE_VARIABLES,
)

_STRICT_ENV = "CONVOTEL_STRICT"


class InvalidContextValueWarning(UserWarning):
    """A session id, user id, metadata, tags or prompt template value was rejected or altered."""


def _strict_default() -> bool:
    return os.environ.get(_STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _complain(message: str, strict: bool | None) -> None:
    if _strict_default() if strict is None else strict:
        raise ValueError(message)
    warnings.warn(message, InvalidContextValueWarning, stacklevel=4)


def _valid_id(what: str, value: object, strict: bool | None) -> str | None:
    """Return ``value`` as a usable id, or ``None`` after warning about why it is unusable."""
    if isinstance(value, bool):
        _complain(f"convotel: {what} must be a non-empty string, got a bool; not set", strict)
        return None
    if isinstance(value, (int, uuid.UUID)):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001 - e.g. an int too long for str() (4,300 digits)
            kind = type(value).__name__
            _complain(f"convotel: {what} {kind} cannot be converted to a string; not set", strict)
            return None
    if not isinstance(value, str):
        kind = "None" if value is None else type(value).__name__
        _complain(f"convotel: {what} must be a non-empty string, got {kind}; not set", strict)
        return None
    if not value.strip():
        shown = "an empty string" if not value else "a whitespace-only string"
        _complain(f"convotel: {what} must be a non-empty string, got {shown}; not set", strict)
        return None
    if len(value) > MAX_ID_LENGTH:
        _complain(
            f"convotel: {what} is {len(value)} characters long; truncated to {MAX_ID_LENGTH}",
            strict,
        )
        return value[:MAX_ID_LENGTH]
    return value


def _valid_text(what: str, value: object, strict: bool | None) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    kind = repr(value) if isinstance(value, str) else type(value).__name__
    _complain(f"convotel: {what} must be a non-empty string, got {kind}; not set", strict)
    return None


def _valid_mapping(what: str, value: object, strict: bool | None) -> dict[str, Any] | None:
    kind = type(value).__name__
    if isinstance(value, Mapping):
        try:
            copied = dict(value)
        except Exception:  # noqa: BLE001 - e.g. a lazy mapping whose values fail to load
            _complain(f"convotel: {what} ({kind}) could not be read; not set", strict)
            return None
        if all(isinstance(key, str) for key in copied):
            return copied
        kind = "a mapping with non-str keys"
    _complain(f"convotel: {what} must be a mapping with string keys, got {kind}; not set", strict)
    return None


def _valid_tags(value: object, strict: bool | None) -> list[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) and t.strip() for t in value):
        return list(value)
    kind = type(value).__name__
    if isinstance(value, (list, tuple)):
        kind = "a sequence with empty or non-string items"
    _complain(f"convotel: tags must be a list of non-empty strings, got {kind}; not set", strict)
    return None


def _loads_object(encoded: object) -> dict[str, Any]:
    """Decode a JSON object stored in the context (OpenInference stores metadata that way)."""
    if isinstance(encoded, str):
        try:
            decoded = json.loads(encoded)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    if isinstance(encoded, Mapping):
        return dict(encoded)
    return {}


# --- context updates (pure functions of a Context) ------------------------------------------


def _session_update(session_id: str) -> ContextUpdate:
    return lambda ctx: context_api.set_value(SESSION_ID, session_id, ctx)


def _user_update(user_id: str) -> ContextUpdate:
    recorded = recorded_user_id(user_id)  # its pseudonym when a user id key is configured
    return lambda ctx: context_api.set_value(USER_ID, recorded, ctx)


def _metadata_update(metadata: dict[str, Any]) -> ContextUpdate:
    def update(ctx: Context) -> Context:
        merged = _loads_object(context_api.get_value(METADATA, ctx))
        merged.update(metadata)
        return context_api.set_value(METADATA, safe_json_dumps(merged), ctx)

    return update


def _tags_update(tags: list[str]) -> ContextUpdate:
    def update(ctx: Context) -> Context:
        outer = context_api.get_value(TAGS, ctx)
        combined = [t for t in outer if isinstance(t, str)] if isinstance(outer, list) else []
        combined += [t for t in tags if t not in combined]
        return context_api.set_value(TAGS, combined, ctx)

    return update


def _prompt_template_update(
    template: str, variables: dict[str, Any] | None, version: str | None
) -> ContextUpdate:
    def update(ctx: Context) -> Context:
        ctx = context_api.set_value(PROMPT_TEMPLATE, template, ctx)
        ctx = context_api.set_value(
            PROMPT_TEMPLATE_VARIABLES,
            safe_json_dumps(variables) if variables is not None else None,
            ctx,
        )
        return context_api.set_value(PROMPT_TEMPLATE_VERSION, version, ctx)

    return update


# --- functional setters (the twin of OpenInference JS setSession/setUser) --------------------


def set_session(context: Context, session_id: object, *, strict: bool | None = None) -> Context:
    """Return ``context`` with ``session.id`` set (unchanged, with a warning, if the id is bad)."""
    valid = _valid_id("session_id", session_id, strict)
    return context if valid is None else _session_update(valid)(context)


def set_user(context: Context, user_id: object, *, strict: bool | None = None) -> Context:
    """Return ``context`` with ``user.id`` set (unchanged, with a warning, if the id is bad)."""
    valid = _valid_id("user_id", user_id, strict)
    return context if valid is None else _user_update(valid)(context)


def set_metadata(
    context: Context, metadata: Mapping[str, Any], *, strict: bool | None = None
) -> Context:
    """Return ``context`` with ``metadata`` merged into any metadata it already carries."""
    valid = _valid_mapping("metadata", metadata, strict)
    return context if valid is None else _metadata_update(valid)(context)


def set_tags(context: Context, tags: Sequence[str], *, strict: bool | None = None) -> Context:
    """Return ``context`` with ``tags`` appended to any tags it already carries."""
    valid = _valid_tags(tags, strict)
    return context if valid is None else _tags_update(valid)(context)


def set_prompt_template(
    context: Context,
    template: str,
    variables: Mapping[str, Any] | None = None,
    version: str | None = None,
    *,
    strict: bool | None = None,
) -> Context:
    """Return ``context`` carrying a prompt template, its variables and version."""
    update = _prompt_template_parts(template, variables, version, strict)
    return context if update is None else update(context)


def get_attributes_from_context(
    context: Context | None = None,
) -> Iterator[tuple[str, AttributeValue]]:
    """Yield the ``(attribute, value)`` pairs the context carries (session, user, metadata...)."""
    ctx = context if context is not None else context_api.get_current()
    yield from context_attributes(ctx).items()


def context_attributes(context: Context) -> dict[str, AttributeValue]:
    """The attributes ``context`` carries (session, user, metadata...), as a new dict."""
    found: dict[str, AttributeValue] = {}
    get = context.get
    for key in CONTEXT_ATTRIBUTES:
        value = get(key)
        if value is None:  # most keys: checked first, this runs for every span
            continue
        if isinstance(value, str):
            if value:
                found[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            found[key] = list(value)
    return found


def _prompt_template_parts(
    template: object,
    variables: object,
    version: object,
    strict: bool | None,
) -> ContextUpdate | None:
    valid_template = _valid_text("prompt template", template, strict)
    if valid_template is None:
        return None
    valid_variables = None
    if variables is not None:
        valid_variables = _valid_mapping("prompt template variables", variables, strict)
    valid_version = None
    if version is not None:
        valid_version = _valid_text("prompt template version", version, strict)
    return _prompt_template_update(valid_template, valid_variables, valid_version)


def using_session(session_id: object, *, strict: bool | None = None) -> ContextScope:
    """Set ``session.id`` for the block or the decorated function (see module docs)."""
    valid = _valid_id("session_id", session_id, strict)
    return ContextScope([] if valid is None else [_session_update(valid)])


def using_user(user_id: object, *, strict: bool | None = None) -> ContextScope:
    """Set ``user.id`` for the block or the decorated function (see module docs)."""
    valid = _valid_id("user_id", user_id, strict)
    return ContextScope([] if valid is None else [_user_update(valid)])


def using_metadata(metadata: Mapping[str, Any], *, strict: bool | None = None) -> ContextScope:
    """Merge ``metadata`` into the context's metadata (inner keys win)."""
    valid = _valid_mapping("metadata", metadata, strict)
    return ContextScope([] if valid is None else [_metadata_update(valid)])


def using_tags(tags: Sequence[str], *, strict: bool | None = None) -> ContextScope:
    """Append ``tags`` to the context's tags."""
    valid = _valid_tags(tags, strict)
    return ContextScope([] if valid is None else [_tags_update(valid)])


def using_prompt_template(
    *,
    template: str,
    variables: Mapping[str, Any] | None = None,
    version: str | None = None,
    strict: bool | None = None,
) -> ContextScope:
    """Set the prompt template (and optionally its variables and version)."""
    update = _prompt_template_parts(template, variables, version, strict)
    return ContextScope([] if update is None else [update])


def using_attributes(
    *,
    session_id: object = None,
    user_id: object = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    prompt_template: str | None = None,
    prompt_template_version: str | None = None,
    prompt_template_variables: Mapping[str, Any] | None = None,
    strict: bool | None = None,
) -> ContextScope:
    """Set any of the context attributes at once; arguments left as ``None`` are not touched."""
    updates: list[ContextUpdate] = []
    if session_id is not None and (valid := _valid_id("session_id", session_id, strict)):
        updates.append(_session_update(valid))
    if user_id is not None and (valid := _valid_id("user_id", user_id, strict)):
        updates.append(_user_update(valid))
    if metadata is not None and (mapping := _valid_mapping("metadata", metadata, strict)):
        updates.append(_metadata_update(mapping))
    if tags is not None and (tag_list := _valid_tags(tags, strict)):
        updates.append(_tags_update(tag_list))
    if prompt_template is not None:
        update = _prompt_template_parts(
            prompt_template, prompt_template_variables, prompt_template_version, strict
        )
        if update is not None:
            updates.append(update)
    return ContextScope(updates)
