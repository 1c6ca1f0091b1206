"""The ``previous_response_id`` chain map stays bounded (#19): 100,000 chained responses through
the Responses endpoint's session rules keep memory flat and the chain resolved."""

from __future__ import annotations

import gc
import tracemalloc
from types import SimpleNamespace

from convotel.openai.sessions import (
    RESPONSE_CHAINS,
    responses_request_session,
    responses_session,
)
from convotel.provider_sessions import MAX_CHAINED_RESPONSES

TURNS = 100_000


def chained_turn(n: int) -> str:
    """Turn ``n`` of one chain: read the request's session, then record the response."""
    response_id = f"resp_{n:024d}"
    previous = f"resp_{n - 1:024d}" if n else None
    kwargs = {"previous_response_id": previous} if previous else {}
    session = responses_request_session((), kwargs)
    response = SimpleNamespace(
        id=response_id, conversation=None, previous_response_id=previous, store=True
    )
    list(responses_session(response, None))
    return session.session_id if session is not None else response_id


def test_100000_chained_responses_keep_memory_flat_and_one_session() -> None:
    RESPONSE_CHAINS.clear()
    try:
        tracemalloc.start()
        try:
            # Fill the map twice over (so every entry it holds was allocated while traced).
            sessions = {chained_turn(n) for n in range(2 * MAX_CHAINED_RESPONSES)}
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            sessions |= {chained_turn(n) for n in range(2 * MAX_CHAINED_RESPONSES, TURNS)}
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert sessions == {f"resp_{0:024d}"}  # 100,000 turns, one session
        assert len(RESPONSE_CHAINS) == MAX_CHAINED_RESPONSES
        assert grown < 256 * 1024, f"the chain map grew by {grown} bytes"
    finally:
        RESPONSE_CHAINS.clear()
