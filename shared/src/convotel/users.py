"""Users as the read model sees them: the sessions of one ``user.id``, summed.

A session belongs to its user (its first ``user.id``, see :class:`convotel.sessions.Session`);
sessions without a user belong to no one and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from convotel.sessions import Session, TokenCounts, sum_costs

__all__ = ["UserSummary", "summarize_users"]


@dataclass(frozen=True)
class UserSummary:
    """One user's sessions (most recently active first) and their totals."""

    user_id: str
    sessions: tuple[Session, ...]

    @property
    def turns(self) -> int:
        return sum(len(session.turns) for session in self.sessions)

    @property
    def llm_calls(self) -> int:
        return sum(session.llm_calls for session in self.sessions)

    @property
    def tokens(self) -> TokenCounts:
        return sum((session.tokens for session in self.sessions), TokenCounts())

    @property
    def cost_usd(self) -> float | None:
        """USD over the user's priced model calls; ``None`` if none was priced."""
        return sum_costs(session.cost_usd for session in self.sessions)

    @property
    def unpriced_llm_calls(self) -> int:
        return sum(session.unpriced_llm_calls for session in self.sessions)

    @property
    def errors(self) -> int:
        return sum(session.errors for session in self.sessions)

    @property
    def first_seen_ns(self) -> int:
        return min(session.first_time_ns for session in self.sessions)

    @property
    def last_seen_ns(self) -> int:
        return max(session.last_time_ns for session in self.sessions)


def summarize_users(sessions: Iterable[Session]) -> list[UserSummary]:
    """One summary per user of ``sessions``, most recently seen first."""
    by_user: dict[str, list[Session]] = {}
    for session in sessions:
        if session.user_id is not None:
            by_user.setdefault(session.user_id, []).append(session)
    users = [
        UserSummary(
            user,
            tuple(sorted(owned, key=lambda s: (-s.last_time_ns, s.session_id))),
        )
        for user, owned in by_user.items()
    ]
    users.sort(key=lambda user: (-user.last_seen_ns, user.user_id))
    return users
