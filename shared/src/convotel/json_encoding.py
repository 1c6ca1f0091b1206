"""JSON encoding that never raises: the one way convotel turns objects into attribute strings."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["json_text", "jsonable", "safe_json_dumps", "valid_unicode"]


def jsonable(value: Any) -> Any:
    """Best-effort conversion of SDK objects (pydantic models, dataclasses...) to JSON data."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        try:
            return model_dump(mode="json", exclude_unset=True)
        except Exception:  # noqa: BLE001 - an exotic model must not break encoding
            return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"


# One encoder for every call: ``json.dumps`` with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(default=jsonable, ensure_ascii=False)
# ``JSONEncoder.encode`` still builds its C encoder on every call (half the cost of a small
# dict); this is that C encoder, built once. No circular-reference markers: a marker dict would be
# shared by threads (a false "circular reference" when two encode one object at once); a real cycle
# ends in RecursionError instead, caught below like any other failure.
_C_ENCODE: Any = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, jsonable, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def _encode(value: Any) -> str:
    if _C_ENCODE is None or isinstance(value, str):  # no C accelerator (e.g. PyPy)
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def safe_json_dumps(value: Any) -> str:
    """``json.dumps`` that falls back to :func:`jsonable` for unknown objects and never raises."""
    try:
        return _encode(value)
    except Exception:  # noqa: BLE001 - e.g. circular references or keys that are not strings
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - e.g. an unprintable object or an int too long to print
            text = f"<{type(value).__name__}>"
        return json.dumps(text, ensure_ascii=False)


def json_text(value: Any) -> str | None:
    """Text as it is, ``None`` as ``None``, anything else as its JSON (never raises)."""
    if value is None or isinstance(value, str):
        return value
    return safe_json_dumps(value)


def valid_unicode(text: str) -> str:
    """``text`` as valid Unicode, so it encodes to UTF-8 (OTLP, SQLite): a surrogate pair held as
    two code points becomes its character, a lone surrogate U+FFFD. Unchanged when already valid."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
