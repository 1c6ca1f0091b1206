"""``convotel demo``: a small multi-user chatbot, traced by convotel, then its sessions.

Four users hold seven conversations through the real OpenAI, Mistral and LlamaIndex SDKs, each
conversation inside ``using_session``/``using_user``. Without ``--live`` (or without API keys) the
SDKs talk to :class:`~convotel.demo.fake_server.FakeLLMServer` on 127.0.0.1. Spans go to the
embedded SQLite store (``--store``) or to an OTLP/HTTP endpoint such as Phoenix (``--otlp``).

With ``--serve`` the same bots answer inside a real web service instead (FastAPI on uvicorn,
OpenTelemetry's FastAPI instrumentation on; see :mod:`convotel.demo.web_app`) and the users send
every turn as an HTTP request: the HTTP server span is each turn's root, not a ``chat_turn`` span.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import openai
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from convotel.cli import format_sessions_table, truncate
from convotel.context import using_metadata, using_session, using_tags, using_user
from convotel.demo.bots import (
    ChatBot,
    LlamaIndexChatBot,
    MistralChatBot,
    OpenAIChatBot,
    Reply,
    unsupported_features,
)
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.script import (
    CONVERSATIONS,
    MISTRAL_MODEL,
    Conversation,
    Provider,
    ScriptedTurn,
)
from convotel.demo.telemetry import (
    OTLP_EXPORTER,
    PROVIDER_NAMES,
    Telemetry,
    build_telemetry,
    delivery_problem,
    destination_problem,
    instrumented,
)
from convotel.sessions import Session, build_sessions
from convotel.store import SpanStore, StoreError

__all__ = ["add_arguments", "run"]

DEFAULT_PROJECT = "convotel-demo"
TURN_SPAN_NAME = "chat_turn"
DEMO_TAG = "convotel-demo"
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


# ------------------------------------------------------------------------------ the clients


@dataclass
class Clients:
    """The SDK clients, pointed at the loopback server or at the real APIs."""

    openai: openai.OpenAI
    mistral: Any
    openai_live: bool
    mistral_live: bool

    def close(self) -> None:
        self.openai.close()
        with contextlib.suppress(Exception):
            self.mistral.__exit__(None, None, None)


def build_clients(server: FakeLLMServer | None, openai_live: bool, mistral_live: bool) -> Clients:
    from mistralai.client import Mistral
    from mistralai.client.utils import BackoffStrategy, RetryConfig

    retry = RetryConfig("backoff", BackoffStrategy(50, 1000, 2.0, 10_000), True)
    if openai_live:
        openai_client = openai.OpenAI(max_retries=2)
    else:
        assert server is not None
        openai_client = openai.OpenAI(
            base_url=server.openai_base_url, api_key="sk-demo-loopback", max_retries=2
        )
    if mistral_live:
        mistral = Mistral(api_key=os.environ["MISTRAL_API_KEY"], retry_config=retry)
    else:
        assert server is not None
        mistral = Mistral(
            api_key="demo-loopback", server_url=server.mistral_server_url, retry_config=retry
        )
    return Clients(openai_client, mistral, openai_live, mistral_live)


def make_bot(provider: Provider, clients: Clients, tracer: Tracer) -> ChatBot:
    if provider == "mistral":
        return MistralChatBot(clients.mistral, MISTRAL_MODEL)
    if provider == "llama_index":
        return LlamaIndexChatBot(clients.openai)
    return OpenAIChatBot(clients.openai, tracer, live=clients.openai_live)


# -------------------------------------------------------------------------- the conversation


@dataclass
class Outcome:
    """How the run went, for the exit status and the closing lines."""

    session_ids: list[str]
    turns: int = 0
    failed_turns: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Progress:
    """One line per turn, written whole (conversations run on several threads)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            print(text, file=self.out, flush=True)

    def turn(
        self,
        conversation: Conversation,
        number: int,
        turn: ScriptedTurn,
        reply: Reply | None,
        elapsed: float,
        error: BaseException | None = None,
    ) -> None:
        how = ["stream" if turn.stream else "json"]
        if reply is not None and reply.tool_calls:
            how.append("+".join(sorted(set(reply.tool_calls))))
        if turn.fault == "rate_limited":
            how.append("429→SDK retry")
        tokens = (
            f"{reply.prompt_tokens}→{reply.completion_tokens} tok"
            if reply is not None and (reply.prompt_tokens or reply.completion_tokens)
            else ""
        )
        head = (
            f"  {'✗' if error else '✓'} {conversation.user_id:<7} {conversation.slug:<17}"
            f"{number}/{len(conversation.turns)}  {PROVIDER_NAMES[conversation.provider]:<10}"
            f" {' '.join(how):<24} {tokens:>14} {elapsed * 1000:>6.0f} ms  "
        )
        said = truncate(turn.text, 44)
        lines = [head + said]
        if reply is not None:
            lines += [
                f"      ! {problem}: the bot retried and got an answer"
                for problem in reply.recovered_errors
            ]
        if error is not None:
            lines.append(f"      ! {type(error).__name__}: {truncate(str(error), 100)}")
        self.line("\n".join(lines))


def hold_conversation(
    conversation: Conversation,
    session_id: str,
    run_id: str,
    clients: Clients,
    tracer: Tracer,
    progress: Progress,
    outcome: Outcome,
) -> None:
    """Play one conversation in its own session; every turn is one trace."""
    metadata = {"demo_run": run_id, "provider": conversation.provider}
    with (
        using_session(session_id),
        using_user(conversation.user_id),
        using_metadata(metadata),
        using_tags([DEMO_TAG, conversation.provider]),
    ):
        bot = make_bot(conversation.provider, clients, tracer)
        for number, turn in enumerate(conversation.turns, start=1):
            attributes = {
                SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.CHAIN.value,
                SpanAttributes.INPUT_VALUE: turn.text,
            }
            started = time.perf_counter()
            reply: Reply | None = None
            error: Exception | None = None
            with tracer.start_as_current_span(
                TURN_SPAN_NAME, attributes=attributes, record_exception=False
            ) as span:
                try:
                    reply = bot.reply(turn)
                except Exception as failure:  # noqa: BLE001 - the demo reports it and goes on
                    error = failure
                    span.record_exception(failure)
                    span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}"))
                else:
                    span.set_attribute(SpanAttributes.OUTPUT_VALUE, reply.text)
                    span.set_status(Status(StatusCode.OK))
            with outcome.lock:
                outcome.turns += 1
                outcome.failed_turns += error is not None
            progress.turn(conversation, number, turn, reply, time.perf_counter() - started, error)


# ------------------------------------------------------------------------------- the summary


def stored_sessions(
    store_path: os.PathLike[str] | str, session_ids: Sequence[str]
) -> list[Session]:
    with SpanStore(store_path) as store:
        found = [store.session(session_id) for session_id in session_ids]
    return _by_recency([session for session in found if session is not None])


def collected_sessions(
    collector: InMemorySpanExporter, session_ids: Sequence[str]
) -> list[Session]:
    wanted = set(session_ids)
    found = build_sessions(collector.get_finished_spans())
    return _by_recency([session for session in found if session.session_id in wanted])


def _by_recency(sessions: list[Session]) -> list[Session]:
    return sorted(sessions, key=lambda session: (-session.last_time_ns, session.session_id))


def _phoenix_hint(otlp_url: str, project: str) -> str:
    base = otlp_url.split("/v1/traces")[0].rstrip("/")
    return (
        f"Open {base}/projects in a browser, pick the project {project!r} "
        "and its Sessions tab to read each conversation (spans show up there within a second)."
    )


def print_summary(telemetry: Telemetry, outcome: Outcome, out: TextIO) -> None:
    """The sessions table of this run, read back from where the spans went."""
    if telemetry.store is not None:
        sessions = stored_sessions(telemetry.store.path, outcome.session_ids)
    else:
        assert telemetry.collector is not None
        sessions = collected_sessions(telemetry.collector, outcome.session_ids)
    print("", file=out)
    print(format_sessions_table(sessions), file=out)
    print("", file=out)
    users = {session.user_id for session in sessions}
    print(f"{len(sessions)} sessions of {len(users)} users, {outcome.turns} turns.", file=out)
    if telemetry.store is not None:
        store_option = f" --store {telemetry.store.path}"
        example = sessions[0].session_id if sessions else "ID"
        print(f"List them again:  convotel sessions{store_option}", file=out)
        print(f"Read one:         convotel sessions{store_option} show {example}", file=out)
    if telemetry.otlp is not None:
        print(_phoenix_hint(telemetry.otlp.endpoint, telemetry.otlp.project), file=out)


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


def play_conversations(
    clients: Clients, telemetry: Telemetry, run_id: str, workers: int, out: TextIO
) -> Outcome:
    """Every conversation of the script, ``workers`` at a time, with every instrumentor on."""
    outcome = Outcome([c.session_id(run_id) for c in CONVERSATIONS])
    progress = Progress(out)
    with (
        instrumented(telemetry.provider, out),
        ThreadPoolExecutor(workers, thread_name_prefix="demo-user") as pool,
    ):
        futures = [
            pool.submit(
                hold_conversation,
                conversation,
                session_id,
                run_id,
                clients,
                telemetry.tracer,
                progress,
                outcome,
            )
            for conversation, session_id in zip(CONVERSATIONS, outcome.session_ids, strict=True)
        ]
        for future in futures:
            future.result()
    return outcome


def serve_conversations(
    clients: Clients, telemetry: Telemetry, run_id: str, workers: int, out: TextIO
) -> Outcome:
    """Every conversation of the script sent over HTTP to the chatbot served on 127.0.0.1."""
    from convotel.demo.web_app import ChatService, ServedApp, create_app
    from convotel.demo.web_users import hold_conversation_over_http

    outcome = Outcome([c.session_id(run_id) for c in CONVERSATIONS])
    progress = Progress(out)
    service = ChatService(
        lambda provider: make_bot(provider, clients, telemetry.tracer),
        metadata={"demo_run": run_id},
        tags=(DEMO_TAG,),
    )
    app = create_app(service, telemetry.provider)
    with instrumented(telemetry.provider, out), ServedApp(app) as served:
        print(
            f"Chat service (FastAPI on uvicorn): POST {served.url}/chat and "
            f"{served.url}/chat/stream (server-sent events); the users call it over HTTP.",
            file=out,
        )
        with ThreadPoolExecutor(workers, thread_name_prefix="demo-user") as pool:
            futures = [
                pool.submit(
                    hold_conversation_over_http,
                    conversation,
                    session_id,
                    served.url,
                    progress,
                    outcome,
                )
                for conversation, session_id in zip(CONVERSATIONS, outcome.session_ids, strict=True)
            ]
            for future in futures:
                future.result()
    return outcome


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
        finally:
            clients.close()
    finally:
        telemetry.provider.force_flush()
        telemetry.provider.shutdown()
        if server is not None:
            server.stop()
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
