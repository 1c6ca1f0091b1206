"""What the demo tests share: running the CLI in-process, and the script's conversations."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from convotel import cli
from convotel.demo.script import CONVERSATIONS, Conversation


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``convotel <argv>`` in this process: its exit status, standard output and error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


def conversation(slug: str) -> Conversation:
    """The demo script's conversation ``slug``."""
    return next(c for c in CONVERSATIONS if c.slug == slug)
