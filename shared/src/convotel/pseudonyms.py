"""Pseudonymous user ids: with a key configured, user ids are recorded and sent as a keyed hash.

``user.id`` is personal data, and it leaves the process in the ``baggage`` header. With a key
(the environment variable ``CONVOTEL_USER_ID_KEY``, or :func:`configure_user_id_key` /
``TraceConfig(user_id_key=...)`` in code), every user id your code gives convotel —
``using_user``, ``set_user``, ``using_attributes(user_id=...)``, the web middleware, a provider's
user id — enters the context as :func:`pseudonymous_user_id` of it: ``u-`` and the first 32 hex
digits of HMAC-SHA256(key, the UTF-8 id). Spans, logs, the store and baggage then only ever see
the pseudonym; the same key gives the same pseudonym in every process, and without the key it
cannot be reversed or recomputed. Without a key nothing changes.

A value that already has a pseudonym's shape (``u-`` and 32 lowercase hex digits) is taken as
one and kept: baggage from a service sharing the key is not hashed twice. To find one user's data
(e.g. to delete it), compute their pseudonym with the same key and look it up:
``convotel sessions --user "$(python -m convotel.pseudonyms alice)"``.

The key never appears in a span, a log record or an error message.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import sys
import threading

__all__ = [
    "USER_ID_KEY_ENV",
    "configure_user_id_key",
    "pseudonymous_user_id",
    "recorded_user_id",
]

#: The environment variable holding the key (read when first needed).
USER_ID_KEY_ENV = "CONVOTEL_USER_ID_KEY"
_PSEUDONYM = re.compile(r"u-[0-9a-f]{32}")
_lock = threading.Lock()
_configured: list[bytes | None] = []  # empty: not configured yet (the environment decides)


def _as_key(key: str | bytes) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise ValueError("convotel: the user id key must be a non-empty string or bytes")
    return key


def configure_user_id_key(key: str | bytes | None) -> None:
    """Use ``key`` for the process's user ids from now on (``None``: record ids as they are).

    Overrides ``CONVOTEL_USER_ID_KEY``. Ids already in a context keep what they were entered as.
    """
    resolved = None if key is None else _as_key(key)
    with _lock:
        _configured[:] = [resolved]


def _current_key() -> bytes | None:
    if not _configured:
        text = os.environ.get(USER_ID_KEY_ENV, "")
        with _lock:
            if not _configured:
                _configured.append(text.encode("utf-8") if text else None)
    return _configured[0]


def pseudonymous_user_id(user_id: str, key: str | bytes | None = None) -> str:
    """``user_id``'s pseudonym under ``key`` (default: the configured key; it must be set)."""
    resolved = _current_key() if key is None else _as_key(key)
    if resolved is None:
        raise ValueError(f"convotel: no user id key: set {USER_ID_KEY_ENV} or pass key=")
    return _pseudonym(resolved, user_id)


@functools.lru_cache(maxsize=4096)
def _pseudonym(key: bytes, user_id: str) -> str:
    digest = hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"u-{digest[:32]}"


def recorded_user_id(user_id: str) -> str:
    """What a user id is recorded as: its pseudonym when a key is configured (unless it already
    is one), else the id itself."""
    key = _current_key()
    if key is None or _PSEUDONYM.fullmatch(user_id):
        return user_id
    return _pseudonym(key, user_id)


def _main(arguments: list[str]) -> int:
    """``python -m convotel.pseudonyms USER_ID...``: print each id's pseudonym (the key from
    ``CONVOTEL_USER_ID_KEY``)."""
    if not arguments or _current_key() is None:
        print(f"usage: {USER_ID_KEY_ENV}=... python -m convotel.pseudonyms USER_ID...")
        return 2
    for user_id in arguments:
        print(pseudonymous_user_id(user_id))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
