"""The span store's errors: each names the file and what to do about it."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

#: The environment variable naming the store file.
STORE_ENV_VAR = "CONVOTEL_STORE"


logger = logging.getLogger(__name__)

_MAX_DETAIL = 200  # characters of SQLite's message quoted in an error

# What the sqlite3 module raises for a file it cannot use. It raises UnicodeDecodeError instead of
# sqlite3.Error when SQLite's message quotes bytes that are not UTF-8 (e.g. a damaged schema).
_SQLITE_ERRORS = (sqlite3.Error, UnicodeDecodeError)
# What binding a value SQLite cannot store raises: text that is not valid UTF-8 (a lone

_T = TypeVar("_T")


class StoreError(Exception):
    """The span store cannot be used; the message names the file and what to do about it."""

    def __init__(self, path: Path, problem: str, advice: str) -> None:
        super().__init__(f"convotel span store {path}: {problem}. {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice


class StoreNotFoundError(StoreError):
    """No store file at the path (readers never create one)."""


class StoreCorruptError(StoreError):
    """The file is not a readable SQLite database."""


class StoreLockedError(StoreError):
    """Another connection kept the database locked for longer than the busy timeout."""


class StoreSchemaError(StoreError):
    """The file's schema is newer than this convotel, or it is not a convotel store."""


def _not_found(path: Path) -> StoreNotFoundError:
    return StoreNotFoundError(
        path,
        "no span store here yet",
        "Run `convotel demo`, or point an application at this file with "
        "SQLiteSpanExporter (see the README), or choose another file with --store PATH or "
        f"${STORE_ENV_VAR}",
    )


def _corrupt(path: Path, detail: object) -> StoreCorruptError:
    return StoreCorruptError(
        path,
        f"the file is not a readable SQLite database ({detail})",
        f"It was left untouched. Move it aside (mv '{path}' '{path}.broken') and convotel starts "
        f"a new store there, or use another file with --store PATH or ${STORE_ENV_VAR}; "
        f"`sqlite3 '{path}.broken' .recover` may salvage its rows",
    )


def _locked(path: Path, detail: object) -> StoreLockedError:
    return StoreLockedError(
        path,
        f"the database stayed locked by another connection ({detail})",
        "Close or wait for the program holding the lock and retry; the exporter keeps unwritten "
        "spans in memory and writes them on its next export",
    )


def _newer_schema(path: Path, version: int, supported: int) -> StoreSchemaError:
    return StoreSchemaError(
        path,
        f"it was written by a newer convotel (schema version {version}; this version "
        f"understands up to {supported})",
        "It was left untouched. Upgrade convotel (pip install -U convotel) or use another file "
        f"with --store PATH or ${STORE_ENV_VAR}",
    )


def _foreign(path: Path, what: str) -> StoreSchemaError:
    return StoreSchemaError(
        path,
        f"it is not a convotel span store ({what})",
        f"It was left untouched. Use another file with --store PATH or ${STORE_ENV_VAR}",
    )


def _message(error: Exception) -> str:
    """SQLite's message, on one line and short (it may quote a whole damaged schema)."""
    if isinstance(error, UnicodeDecodeError) and isinstance(error.object, bytes):
        text = error.object.decode("utf-8", "replace")  # the message SQLite could not hand over
    else:
        text = str(error)
    if not text and isinstance(error, sqlite3.DatabaseError):
        # Python 3.10 raises a DatabaseError without a message where 3.11+ raises the
        # UnicodeDecodeError above: SQLite's message quoted text in the file that is not UTF-8.
        text = "SQLite's message quotes damaged text that is not UTF-8"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _translate(error: Exception, path: Path) -> StoreError:
    """Map an error from the sqlite3 module to the typed error a user can act on."""
    code = str(getattr(error, "sqlite_errorname", "") or "")
    detail = _message(error)
    text = detail.lower()
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return _locked(path, detail)
    if (
        code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or isinstance(error, UnicodeDecodeError)  # text in the file that is not UTF-8
        or (isinstance(error, sqlite3.DatabaseError) and not str(error))  # the same on 3.10
        or "not a database" in text
        or "malformed" in text
    ):
        return _corrupt(path, detail)
    return StoreError(
        path,
        f"SQLite error: {detail}",
        "Check that the file and its folder are readable and writable and the disk is not full",
    )


def _retry_while_locked(operation: Callable[[], _T], path: Path, patience: float) -> _T:
    """Run ``operation``; while SQLite reports the database locked, back off and retry.

    Each attempt already waits up to the connection's busy timeout; ``patience`` seconds of
    retries on top cover the cases SQLite's busy handler does not (e.g. WAL recovery).
    """
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            return operation()
        except _SQLITE_ERRORS as exc:
            error = _translate(exc, path)
            remaining = deadline - time.monotonic()
            if not isinstance(error, StoreLockedError) or remaining <= 0:
                raise error from exc
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)
