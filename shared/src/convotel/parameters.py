"""The request parameters a span records: ``llm.invocation_parameters``, never secrets.

Also what counts as "not given" (``None`` and the SDKs' sentinels), which every adapter skips.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from openinference.semconv.trace import SpanAttributes

from convotel.json_encoding import safe_json_dumps

__all__ = [
    "SECRET_PARAMETERS",
    "UNSET_TYPE_NAMES",
    "invocation_parameter_attributes",
    "invocation_parameters_json",
    "is_unset",
]

#: Request parameters never recorded (credentials, transport settings, raw headers).
SECRET_PARAMETERS = frozenset(
    {
        "api_key",
        "api-key",
        "authorization",
        "headers",
        "extra_headers",
        "extra_query",
        "extra_body",
        "http_headers",
        "http_client",
        "timeout",
        "timeout_ms",
        "retries",
        "server_url",
        "base_url",
        "api_base",
        "api_version",
        "azure_ad_token",
        "azure_ad_token_provider",
        "organization",
        "project",
    }
)

#: Type names of the SDKs' "not given" sentinels (openai ``NOT_GIVEN``/``omit``, Mistral ``UNSET``).
UNSET_TYPE_NAMES = frozenset({"NotGiven", "Omit", "Unset", "_Unset", "UnsetType"})


def is_unset(value: Any) -> bool:
    """True for ``None`` and the SDKs' "not given" sentinels (openai ``NOT_GIVEN``, ``UNSET``)."""
    return value is None or type(value).__name__ in UNSET_TYPE_NAMES


@functools.lru_cache(maxsize=64)
def _skipped_parameters(exclude: frozenset[str]) -> frozenset[str]:
    return SECRET_PARAMETERS | exclude


#: JSON of parameter sets made only of text and numbers, by ``(name, value, type)`` items: an
#: application calls with the same few settings again and again (the type keeps ``1``, ``1.0`` and
#: ``True`` apart). Cleared when full; a race at worst encodes one set twice.
_PARAMETERS_JSON: dict[tuple[tuple[str, object, type], ...], str] = {}
_MAX_PARAMETERS_JSON = 512
_MAX_REMEMBERED_TEXT = 256  # longer text values: the set is encoded every call, not remembered
_SCALAR_TYPES = frozenset({str, int, float, bool})


def invocation_parameters_json(
    parameters: Mapping[str, Any], exclude: Iterable[str] = ()
) -> str | None:
    """The JSON of the parameters the user set (no secrets, nothing in ``exclude``, no ``None``
    or "not given" sentinels); ``None`` when there is none."""
    skipped = _skipped_parameters(exclude if isinstance(exclude, frozenset) else frozenset(exclude))
    chosen: dict[str, Any] = {}
    items: list[tuple[str, object, type]] | None = []
    for key, value in parameters.items():
        if key in skipped:
            continue
        kind = type(value)
        if kind in _SCALAR_TYPES:
            if items is not None:
                if kind is str and len(value) > _MAX_REMEMBERED_TEXT:
                    items = None  # e.g. a code suffix: not worth keeping in memory
                else:
                    items.append((key, value, kind))
        elif is_unset(value):
            continue
        else:  # the encoder converts SDK objects (pydantic models...) through jsonable
            items = None
        chosen[key] = value
    if not chosen:
        return None
    if items is None:
        return safe_json_dumps(chosen)
    memo_key = tuple(items)
    text = _PARAMETERS_JSON.get(memo_key)
    if text is None:
        text = safe_json_dumps(chosen)
        if len(_PARAMETERS_JSON) >= _MAX_PARAMETERS_JSON:
            _PARAMETERS_JSON.clear()
        _PARAMETERS_JSON[memo_key] = text
    return text


def invocation_parameter_attributes(
    parameters: Mapping[str, Any], exclude: Iterable[str] = ()
) -> Iterator[tuple[str, str]]:
    """``llm.invocation_parameters`` as JSON: only parameters the user set, never secrets."""
    text = invocation_parameters_json(parameters, exclude)
    if text is not None:
        yield SpanAttributes.LLM_INVOCATION_PARAMETERS, text
