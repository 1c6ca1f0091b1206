"""Sessions as JSON-ready data, for ``convotel sessions --json``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from convotel.feedback import Feedback
from convotel.sessions import Session, TokenCounts, Turn

__all__ = ["session_as_json"]


def _iso_time(nanoseconds: int) -> str:
    moment = datetime.fromtimestamp(nanoseconds // 1000 / 1e6, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tokens_json(tokens: TokenCounts) -> dict[str, int]:
    return {"prompt": tokens.prompt, "completion": tokens.completion, "total": tokens.total}


def _turn_as_json(turn: Turn) -> dict[str, Any]:
    ttft = turn.time_to_first_token_ns
    return {
        "trace_id": turn.trace_id,
        "user_id": turn.user_id,
        "start_time": _iso_time(turn.start_ns),
        "end_time": _iso_time(turn.end_ns),
        "latency_ms": round(turn.latency_ns / 1e6, 3),
        # From the turn's start to its first streamed token; None when nothing streamed.
        "time_to_first_token_ms": None if ttft is None else round(ttft / 1e6, 3),
        "input": turn.input,
        "output": turn.output,
        "tool_calls": [
            {"name": call.name, "arguments": call.arguments, "id": call.id}
            for call in turn.tool_calls
        ],
        "errors": [{"span": error.span_name, "message": error.message} for error in turn.errors],
        "llm_calls": turn.llm_calls,
        "tokens": _tokens_json(turn.tokens),
        "cost_usd": turn.cost_usd,
        "unpriced_llm_calls": turn.unpriced_llm_calls,
        "client_disconnected": turn.client_disconnected,
    }


def _feedback_json(feedback: Feedback) -> dict[str, Any]:
    return {
        "name": feedback.name,
        "score": feedback.score,
        "label": feedback.label,
        "explanation": feedback.explanation,
        "turn": feedback.turn,
        "source": feedback.source,
        "time": _iso_time(feedback.time_ns),
    }


def session_as_json(session: Session, *, with_turns: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of a session (with every turn when ``with_turns``)."""
    summary: dict[str, Any] = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "source": session.source,
        "user_ids": list(session.user_ids),
        "turn_count": len(session.turns),
        "llm_calls": session.llm_calls,
        "tokens": _tokens_json(session.tokens),
        "cost_usd": session.cost_usd,
        "unpriced_llm_calls": session.unpriced_llm_calls,
        "errors": session.errors,
        "first_time": _iso_time(session.first_time_ns),
        "last_time": _iso_time(session.last_time_ns),
        "total_latency_ms": round(session.total_latency_ns / 1e6, 3),
        "first_input": session.first_input,
        "last_output": session.last_output,
    }
    summary["feedback"] = [_feedback_json(given) for given in session.feedback]
    if with_turns:
        summary["turns"] = [_turn_as_json(turn) for turn in session.turns]
    return summary
