"""Ends of the spans whose streams the garbage collector finds, run outside the collection.

A stream nobody finished or closed ends its span from its finalizer. A stream held by a reference
cycle (a cancelled request's traceback holds its frame) is finalized by a collection, and CPython
runs a collection in whichever thread allocates at the wrong moment, possibly while that thread
holds a lock the span's end needs: ``BatchSpanProcessor`` waking its worker under the lock of a
``threading.Event``, an exporter writing under its own. Ended right there, the span would wait
for that lock for good, and so would the thread.

So the end of a span that a collection finalizes is deferred: once the collection is over it is
handed to a helper thread, and the collecting thread waits for it (up to
:data:`WAIT_FOR_ENDS_S`). Normally the span has ended when the collection returns, as it would
have inline; when its end needs a lock the collecting thread holds, it ends as soon as that lock
is released, instead of never. Two cases stay inline: a stream the application let go of (its
finalizer runs at that moment, outside any collection) and a collection inside one of
convotel's own critical sections (their locks are re-entrant: see :func:`register_own_lock`).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue

__all__ = [
    "WAIT_FOR_ENDS_S",
    "end_outside_collection",
    "register_own_lock",
    "watch_collections",
]

#: How long a collecting thread waits for the ends it handed over.
WAIT_FOR_ENDS_S = 1.0

End = Callable[[], None]

#: The thread running a collection right now (one at a time: CPython never runs two at once).
_collecting: int | None = None
#: Ends the running collection deferred (only its thread appends).
_deferred: list[End] = []
#: convotel's re-entrant locks: a collection inside one of them ends its spans inline.
_own_locks: weakref.WeakSet[object] = weakref.WeakSet()
_worker: _EndingThread | None = None
_watching = False
# Re-entrant, for safety: only a collection's end takes it, and collections do not nest.
_worker_lock = threading.RLock()


def register_own_lock(lock: object) -> None:
    """Mark a re-entrant lock of convotel's: ends a collection finalizes while this thread holds
    it run inline (the lock lets them in; a helper thread would wait for it)."""
    _own_locks.add(lock)


def end_outside_collection(end: End) -> None:
    """Run ``end`` (a span's end from a finalizer) now, or after the collection running in this
    thread, in a helper thread (see the module's documentation)."""
    if _collecting != threading.get_ident() or sys.is_finalizing() or _holds_own_lock():
        end()
    else:
        _deferred.append(end)


def _holds_own_lock() -> bool:
    for lock in list(_own_locks):
        is_owned = getattr(lock, "_is_owned", None)
        if is_owned is not None and is_owned():
            return True
    return False


def _on_collection(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks`` hook: note the collecting thread; afterwards, hand its ends over."""
    global _collecting, _deferred
    if phase == "start":
        _collecting = threading.get_ident()
        return
    _collecting = None
    if not _deferred:
        return
    ends, _deferred = _deferred, []
    try:
        _hand_over(ends)
    except Exception as exc:  # noqa: BLE001 - a gc callback must never raise
        _log_once("handing a collected stream's end over", exc)


def _hand_over(ends: list[End]) -> None:
    worker = _ending_thread()
    if worker is None:  # no thread could be started: end them here, as before
        for end in ends:
            _run(end)
        return
    if threading.get_ident() == worker.ident:  # the helper itself collected: its queue runs them
        worker.queue.put((ends, None))
        return
    done = threading.Event()
    worker.queue.put((ends, done))
    if not done.wait(WAIT_FOR_ENDS_S):
        _log_once(
            "waiting for a collected stream's end",
            message=f"a collected stream's span was still ending after {WAIT_FOR_ENDS_S} s "
            "(its end waits for a lock this thread holds); it ends once the lock is released",
        )


class _EndingThread(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="convotel-collected-ends", daemon=True)
        self.queue: SimpleQueue[tuple[list[End], threading.Event | None]] = SimpleQueue()

    def run(self) -> None:
        while True:
            ends, done = self.queue.get()
            for end in ends:
                _run(end)
            if done is not None:
                done.set()


def _ending_thread() -> _EndingThread | None:
    global _worker
    worker = _worker
    if worker is not None and worker.is_alive():
        return worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            try:
                started = _EndingThread()
                started.start()
            except RuntimeError as exc:  # e.g. interpreter shutdown
                _log_once("starting the thread for collected streams' ends", exc)
                return None
            _worker = started
        return _worker


def _run(end: End) -> None:
    try:
        end()
    except Exception as exc:  # noqa: BLE001 - one failing end never stops the others
        _log_once("ending a collected stream's span", exc)


def _log_once(where: str, exc: BaseException | None = None, *, message: str | None = None) -> None:
    from convotel.call_span import log_once  # here: call_span imports this module's importers

    log_once(where, exc, message=message)


def _forget_after_fork() -> None:
    """In a forked child: no collection runs, the helper thread does not exist."""
    global _collecting, _deferred, _worker, _worker_lock
    _collecting, _deferred, _worker, _worker_lock = None, [], None, threading.RLock()


def watch_collections() -> None:
    """Start noting which thread collects (once; a callback on every collection costs well
    under a microsecond, so it is added with the first stream, not on import)."""
    global _watching
    if not _watching:
        _watching = True
        gc.callbacks.append(_on_collection)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
