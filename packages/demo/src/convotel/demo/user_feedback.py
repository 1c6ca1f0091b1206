"""The feedback the demo's users give once their conversations are over (:data:`FEEDBACK` of the
script), through the public :func:`convotel.record_feedback`: a thumbs-down on the conversation
that failed twice, a thumbs-up, and a thumbs-down on one turn of another. It goes where the spans
go and, with ``$CONVOTEL_PHOENIX_ENDPOINT`` set, to Phoenix as session and trace annotations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

from convotel.demo.conversations import Outcome
from convotel.demo.script import CONVERSATIONS, FEEDBACK, ScriptedFeedback
from convotel.demo.summary import run_sessions
from convotel.demo.telemetry import Telemetry
from convotel.feedback import PHOENIX_ENDPOINT_ENV, Feedback, flush_feedback, record_feedback

__all__ = ["PHOENIX_FLUSH_TIMEOUT_S", "feedback_problems", "give_feedback", "wait_for_phoenix"]

#: Seconds the demo waits at the end for its feedback to reach Phoenix.
PHOENIX_FLUSH_TIMEOUT_S = 20.0


def feedback_problems(feedback: Sequence[ScriptedFeedback] = FEEDBACK) -> list[str]:
    """Scripted feedback on a conversation or turn that is not in the script."""
    turns = {conversation.slug: len(conversation.turns) for conversation in CONVERSATIONS}
    problems = []
    for given in feedback:
        if given.slug not in turns:
            problems.append(f"feedback on {given.slug!r}, which is no conversation")
        elif given.turn is not None and not 1 <= given.turn <= turns[given.slug]:
            problems.append(
                f"feedback on turn {given.turn} of {given.slug!r}, which has no such turn"
            )
    return problems


def give_feedback(telemetry: Telemetry, outcome: Outcome) -> list[Feedback]:
    """Each user's scripted feedback on this run's sessions, recorded by ``telemetry``'s provider
    (a turn's is looked up in the spans flushed so far: its trace id is the turn's id)."""
    telemetry.provider.force_flush()
    session_ids = dict(zip((c.slug for c in CONVERSATIONS), outcome.session_ids, strict=True))
    sessions = {s.session_id: s for s in run_sessions(telemetry, outcome.session_ids)}
    users = {conversation.slug: conversation.user_id for conversation in CONVERSATIONS}
    given: list[Feedback] = []
    for scripted in FEEDBACK:
        session = sessions.get(session_ids[scripted.slug])
        if session is None or (scripted.turn is not None and scripted.turn > len(session.turns)):
            continue  # the conversation did not get that far
        turn = None if scripted.turn is None else session.turns[scripted.turn - 1].trace_id
        recorded = record_feedback(
            session.session_id,
            scripted.name,
            score=scripted.score,
            label=scripted.label,
            explanation=scripted.explanation,
            turn=turn,
            source=users[scripted.slug],
            tracer_provider=telemetry.provider,
        )
        if recorded is not None:
            given.append(recorded)
    return given


def wait_for_phoenix(err: TextIO) -> None:
    """Let the feedback reach Phoenix before the demo exits (it is sent in the background)."""
    if os.environ.get(PHOENIX_ENDPOINT_ENV) and not flush_feedback(PHOENIX_FLUSH_TIMEOUT_S):
        print(
            f"convotel demo: some feedback was still being sent to Phoenix after "
            f"{PHOENIX_FLUSH_TIMEOUT_S:.0f} s",
            file=err,
        )
