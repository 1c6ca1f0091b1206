"""The demo's conversations held: every scripted conversation in its own session, several at a
time, in process (each turn a ``chat_turn`` trace) or over HTTP to the served chatbot; one
progress line per turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TextIO

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.trace import Status, StatusCode, Tracer

from convotel.cli.text_table import truncate
from convotel.context import using_metadata, using_session, using_tags, using_user
from convotel.demo.bots import Reply
from convotel.demo.clients import Clients, make_bot
from convotel.demo.script import CONVERSATIONS, Conversation, ScriptedTurn
from convotel.demo.telemetry import PROVIDER_NAMES, Telemetry, instrumented

__all__ = [
    "DEMO_TAG",
    "TURN_SPAN_NAME",
    "Outcome",
    "Progress",
    "hold_conversation",
    "play_conversations",
    "serve_conversations",
]

TURN_SPAN_NAME = "chat_turn"
DEMO_TAG = "convotel-demo"


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


def _hold_every_conversation(
    workers: int, session_ids: list[str], hold: Callable[[Conversation, str], None]
) -> None:
    """``hold(conversation, session_id)`` for every conversation of the script, ``workers`` at a
    time; re-raises the first failure."""
    with ThreadPoolExecutor(workers, thread_name_prefix="demo-user") as pool:
        futures = [
            pool.submit(hold, conversation, session_id)
            for conversation, session_id in zip(CONVERSATIONS, session_ids, strict=True)
        ]
        for future in futures:
            future.result()


def play_conversations(
    clients: Clients, telemetry: Telemetry, run_id: str, workers: int, out: TextIO
) -> Outcome:
    """Every conversation of the script, ``workers`` at a time, with every instrumentor on."""
    outcome = Outcome([c.session_id(run_id) for c in CONVERSATIONS])
    progress = Progress(out)

    def hold(conversation: Conversation, session_id: str) -> None:
        hold_conversation(
            conversation, session_id, run_id, clients, telemetry.tracer, progress, outcome
        )

    with instrumented(telemetry.provider, out):
        _hold_every_conversation(workers, outcome.session_ids, hold)
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

        def hold(conversation: Conversation, session_id: str) -> None:
            hold_conversation_over_http(conversation, session_id, served.url, progress, outcome)

        _hold_every_conversation(workers, outcome.session_ids, hold)
    return outcome
