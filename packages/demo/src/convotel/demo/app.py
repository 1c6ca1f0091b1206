"""``convotel demo``: a small multi-user chatbot, traced by convotel, then its sessions.

Four users hold seven conversations through the real OpenAI, Mistral and LlamaIndex SDKs, each
conversation inside ``using_session``/``using_user``. Without ``--live`` (or without API keys) the
SDKs talk to :class:`~convotel.demo.fake_server.FakeLLMServer` on 127.0.0.1. Spans go to the
embedded SQLite store (``--store``) or to an OTLP/HTTP endpoint such as Phoenix (``--otlp``).
Afterwards three users give feedback (:mod:`convotel.demo.user_feedback`), also sent to Phoenix
as annotations when ``$CONVOTEL_PHOENIX_ENDPOINT`` is set.

With ``--serve`` the same bots answer inside a real web service instead (FastAPI on uvicorn,
OpenTelemetry's FastAPI instrumentation on; see :mod:`convotel.demo.web_app`) and the users send
every turn as an HTTP request: the HTTP server span is each turn's root, not a ``chat_turn`` span.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from convotel.demo.bots import unsupported_features
from convotel.demo.clients import Clients, build_clients
from convotel.demo.conversations import TURN_SPAN_NAME, play_conversations, serve_conversations
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.script import CONVERSATIONS
from convotel.demo.summary import print_summary
from convotel.demo.telemetry import (
    OTLP_EXPORTER,
    Telemetry,
    build_telemetry,
    delivery_problem,
    destination_problem,
)
from convotel.demo.user_feedback import feedback_problems, give_feedback, wait_for_phoenix
from convotel.store import StoreError

__all__ = ["TURN_SPAN_NAME", "add_arguments", "run"]

DEFAULT_PROJECT = "convotel-demo"
#: SDKs the demo imports only when it needs them: (module, package to install).
LAZY_SDKS = (("mistralai.client", "mistralai"), ("llama_index.core", "llama-index-core"))
#: What ``--serve`` needs besides the SDKs (``pip install "convotel-demo[serve]"``).
WEB_PACKAGES = (
    ("fastapi.sse", "fastapi>=0.135"),
    ("uvicorn", "uvicorn"),
    ("httpx_sse", "httpx-sse"),
    ("opentelemetry.instrumentation.fastapi", "opentelemetry-instrumentation-fastapi"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``convotel demo`` options."""
    parser.description = (
        "Run a small multi-user chatbot (OpenAI, Mistral and LlamaIndex SDKs) traced by convotel, "
        "then print its sessions. Without --live it talks to a loopback server on 127.0.0.1."
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        help="SQLite span store to write (default: $CONVOTEL_STORE, else .convotel/spans.sqlite3;"
        " not used with --otlp unless given)",
    )
    parser.add_argument(
        "--otlp",
        metavar="URL",
        help="send spans over OTLP/HTTP, e.g. http://127.0.0.1:6006/v1/traces (Phoenix)",
    )
    parser.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"openinference.project.name resource attribute (default {DEFAULT_PROJECT})",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="call the real APIs of the providers whose key is set "
        "(OPENAI_API_KEY, MISTRAL_API_KEY); the others stay on the loopback server",
    )
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="suffix of this run's session ids (default: random, so runs never merge)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run the chatbot as a web service on 127.0.0.1 (FastAPI on uvicorn, streamed turns "
        "as server-sent events) and send every turn to it over HTTP",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=3,
        metavar="N",
        help="conversations held at the same time, on N threads (default 3)",
    )


# ----------------------------------------------------------------------------------- run


def missing_packages(otlp: bool, serve: bool = False) -> list[str]:
    """The packages this run needs that are not installed."""
    missing = []
    needed = (*LAZY_SDKS, *((OTLP_EXPORTER,) if otlp else ()), *(WEB_PACKAGES if serve else ()))
    for module, package in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


def _live_providers(args: argparse.Namespace, err: TextIO) -> tuple[bool, bool] | None:
    if not args.live:
        return False, False
    openai_live = bool(os.environ.get("OPENAI_API_KEY"))
    mistral_live = bool(os.environ.get("MISTRAL_API_KEY"))
    if not (openai_live or mistral_live):
        print("convotel demo: --live needs OPENAI_API_KEY and/or MISTRAL_API_KEY", file=err)
        return None
    return openai_live, mistral_live


def _introduction(clients: Clients, server: FakeLLMServer | None, telemetry: Telemetry) -> str:
    if server is None:
        where = "the real APIs"
    else:
        live = [
            name
            for name, on in (("OpenAI", clients.openai_live), ("Mistral", clients.mistral_live))
            if on
        ]
        where = f"the loopback server at {server.url}"
        if live:
            where += f" (and the real {' and '.join(live)} API)"
    users = sorted({conversation.user_id for conversation in CONVERSATIONS})
    return (
        f"convotel demo: {len(CONVERSATIONS)} conversations of {len(users)} users "
        f"({', '.join(users)}) through OpenAI, Mistral and LlamaIndex, answered by {where}.\n"
        f"Spans go to {telemetry.destination}."
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every turn got an answer and every span was delivered."""
    out, err = sys.stdout, sys.stderr
    missing = missing_packages(bool(args.otlp), args.serve)
    if missing:
        print(
            f"convotel demo: needs {' and '.join(missing)} "
            f"(pip install {' '.join(map(shlex.quote, missing))}), "
            "or run it with `nox -s demo`",
            file=err,
        )
        return 2
    live = _live_providers(args, err)
    if live is None:
        return 2
    if args.workers < 1:
        print("convotel demo: --workers must be at least 1", file=err)
        return 2
    problems = [p for conversation in CONVERSATIONS for p in unsupported_features(conversation)]
    problems += feedback_problems()
    if problems:
        print(f"convotel demo: the script is inconsistent: {'; '.join(problems)}", file=err)
        return 2
    started = time.perf_counter()
    telemetry = build_telemetry(args)
    problem = destination_problem(args, telemetry)
    if problem is not None:
        telemetry.provider.shutdown()
        print(f"convotel demo: {problem}", file=err)
        return 1
    openai_live, mistral_live = live
    all_live = openai_live and mistral_live
    server = None if all_live else FakeLLMServer(latency=0.02, token_delay=0.002).start()
    try:
        clients = build_clients(server, openai_live, mistral_live)
        try:
            print(_introduction(clients, server, telemetry), file=out)
            play = serve_conversations if args.serve else play_conversations
            outcome = play(
                clients, telemetry, args.run_id or secrets.token_hex(3), args.workers, out
            )
            give_feedback(telemetry, outcome)
        finally:
            clients.close()
    finally:
        telemetry.provider.force_flush()
        telemetry.provider.shutdown()
        if server is not None:
            server.stop()
    wait_for_phoenix(err)
    problem = delivery_problem(telemetry)
    if problem is not None:
        print(f"convotel demo: {problem}", file=err)
        return 1
    try:
        print_summary(telemetry, outcome, out)
    except StoreError as error:
        print(f"convotel demo: {error}", file=err)
        return 1
    print(f"Done in {time.perf_counter() - started:.1f} s.", file=out)
    if outcome.failed_turns:
        print(f"{outcome.failed_turns} turns got no answer (see the ✗ lines).", file=err)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convotel.demo.app``: the same as ``convotel demo``."""
    parser = argparse.ArgumentParser(prog="convotel demo")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
