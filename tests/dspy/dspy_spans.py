"""Helpers for asserting on finished spans in the DSPy tests."""

from __future__ import annotations

from collections.abc import Sequence

import dspy
from opentelemetry.sdk.trace import ReadableSpan

#: DSPy >= 3.4 has its own HTTP engine (lm15) besides LiteLLM.
HAS_NATIVE_ENGINE = hasattr(dspy.LM, "engine")


def by_name(finished: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def one(finished: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    matching = by_name(finished, name)
    assert len(matching) == 1, f"expected one {name!r} span, got {[s.name for s in finished]}"
    return matching[0]


def parent_of(finished: Sequence[ReadableSpan], span: ReadableSpan) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next(s for s in finished if s.context.span_id == span.parent.span_id)
