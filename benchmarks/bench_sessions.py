"""Per-request cost of ``SessionSpanProcessor`` joining the trace and writing the turn's text.

One web request as a server sees it: a root SERVER span (HTTP attributes), the ASGI receive span,
``using_session``/``using_user`` entered by the handler, a database span, one model call (an LLM
span with 10 input messages, its reply, model, usage and invocation parameters, as the adapters
record them) and two ASGI send spans. Each contender is a tracer provider set up differently, in
its own worker process (bench_harness.py):

* ``join+turn``: ``SessionSpanProcessor()`` (the default: stamping, joining and turn text);
* ``stamping only``: ``SessionSpanProcessor(join_trace=False, turn_text=False)``;
* ``no processor``: the spans alone.

The uninstrumented request runs the same code without a tracer provider (no-op spans). The floor
replays the spans ``join+turn`` finished (same names, attributes and nesting) on the bare SDK. A
second scenario is the LLM span alone in a session (no root above it): its floor is the cost of
one bare LLM span with those attributes, the unit the report uses for the processor's cost.

    python benchmarks/bench_sessions.py [--rounds N] [--profile]
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from bench_harness import (
    Batch,
    Contender,
    Scenario,
    Suite,
    SuiteResult,
    main,
    print_report,
    sync_batch,
)
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from convotel import using_session, using_user
from convotel.attributes import (
    Message,
    input_value_attributes,
    invocation_parameter_attributes,
    message_attributes,
    model_attributes,
    output_value_attributes,
    usage_attributes,
)
from convotel.propagation import SessionSpanProcessor

REQUEST, LLM_ALONE = "web request", "LLM span alone"
JOIN_AND_TURN, STAMPING, NO_PROCESSOR = "join+turn", "stamping only", "no processor"

QUESTION = "And which museum should I see first?"
HISTORY = [
    Message(role="system", content="You are a helpful travel assistant. Answer briefly."),
    *[
        Message(role=role, content=f"{role} message {turn}: " + "words " * 12)
        for turn in range(4)
        for role in ("user", "assistant")
    ],
    Message(role="user", content=QUESTION),
]
REPLY = Message(role="assistant", content="Start with the Louvre, early in the morning.")
LLM_INPUT: dict[str, Any] = {
    "openinference.span.kind": "LLM",
    **dict(model_attributes(provider="openai", system="openai", request_model="gpt-4o-mini")),
    **dict(invocation_parameter_attributes({"model": "gpt-4o-mini", "temperature": 0.2})),
    **dict(message_attributes("llm.input_messages", HISTORY)),
    **dict(input_value_attributes(QUESTION)),
}
LLM_OUTPUT: dict[str, Any] = {
    **dict(model_attributes(response_model="gpt-4o-mini-2024-07-18")),
    **dict(message_attributes("llm.output_messages", [REPLY])),
    **dict(output_value_attributes(REPLY.content)),
    **dict(usage_attributes(prompt=180, completion=12, total=192)),
    "llm.finish_reason": "stop",
}
HTTP_REQUEST = {
    "http.request.method": "POST",
    "url.scheme": "http",
    "url.path": "/chat",
    "http.route": "/chat",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "user_agent.original": "python-httpx/0.28.1",
}


def model_call(tracer: trace.Tracer) -> None:
    """One model call as an adapter records it: inputs at the start, the reply at the end."""
    with tracer.start_as_current_span("ChatCompletion", attributes=LLM_INPUT) as span:
        span.set_attributes(LLM_OUTPUT)


def web_request(tracer: trace.Tracer) -> None:
    """One chat turn through a web service, from a context without a session (a new request)."""
    token = context_api.attach(context_api.Context())
    try:
        with tracer.start_as_current_span(
            "POST /chat", kind=SpanKind.SERVER, attributes=HTTP_REQUEST
        ) as root:
            with tracer.start_as_current_span("POST /chat http receive") as receive:
                receive.set_attribute("asgi.event.type", "http.request")
            with using_session("bench-session"), using_user("bench-user"):
                with tracer.start_as_current_span("SELECT history") as query:
                    query.set_attributes(
                        {"db.system.name": "sqlite", "db.operation.name": "SELECT"}
                    )
                model_call(tracer)
            for event in ("http.response.start", "http.response.body"):
                with tracer.start_as_current_span("POST /chat http send") as send:
                    send.set_attribute("asgi.event.type", event)
            root.set_attribute("http.response.status_code", 200)
    finally:
        context_api.detach(token)


def llm_alone(tracer: trace.Tracer) -> None:
    """A model call in a session with no span above it (scripts, notebooks, workers)."""
    token = context_api.attach(context_api.Context())
    try:
        with using_session("bench-session"), using_user("bench-user"):
            model_call(tracer)
    finally:
        context_api.detach(token)


class _ProviderSetup:
    """A "contender": the tracer provider the requests use, with the processor set up one way.

    The harness imports contenders by module name (``bench_sessions``), so the provider is kept
    on this class in that module, where :meth:`SessionsSuite.batch` looks for it.
    """

    options: ClassVar[dict[str, bool] | None] = None  # None: no SessionSpanProcessor
    provider: ClassVar[TracerProvider | None] = None

    def instrument(self, tracer_provider: TracerProvider) -> None:
        if self.options is not None:
            tracer_provider.add_span_processor(SessionSpanProcessor(**self.options))
        _ProviderSetup.provider = tracer_provider

    def uninstrument(self) -> None:
        _ProviderSetup.provider = None


class JoinAndTurn(_ProviderSetup):
    options: ClassVar[dict[str, bool] | None] = {}


class StampingOnly(_ProviderSetup):
    options: ClassVar[dict[str, bool] | None] = {"join_trace": False, "turn_text": False}


class NoProcessor(_ProviderSetup):
    options: ClassVar[dict[str, bool] | None] = None


class SessionsSuite(Suite):
    adapter = "sessions"
    distributions = ("opentelemetry-sdk",)
    scenarios = (
        Scenario(REQUEST, "sync", calls=200, combined=False),
        Scenario(LLM_ALONE, "sync", calls=400, combined=False),
    )
    contenders = (
        Contender(JOIN_AND_TURN, "convotel", "bench_sessions", "JoinAndTurn"),
        Contender(STAMPING, "convotel", "bench_sessions", "StampingOnly"),
        Contender(NO_PROCESSOR, "convotel", "bench_sessions", "NoProcessor"),
    )
    splits_own_code = False  # the contenders are tracer providers, not instrumentors

    def setup(self, stubbed: bool) -> None:
        return None

    def batch(self, scenario: Scenario) -> Batch:
        provider = importlib.import_module("bench_sessions")._ProviderSetup.provider
        tracer = trace.NoOpTracer() if provider is None else provider.get_tracer("bench")
        call = web_request if scenario.name == REQUEST else llm_alone
        return sync_batch(lambda: call(tracer))

    def report(self, result: SuiteResult) -> None:
        print_report(result)
        for line in summary(result):
            print(line)


def summary(result: SuiteResult) -> list[str]:
    """The processor's own cost per request, as multiples of one bare LLM span and the floor."""
    rows = {row.scenario: row for row in result.rows}
    request, alone = rows.get(REQUEST), rows.get(LLM_ALONE)
    if request is None or alone is None:
        return []
    costs = request.overhead_us
    if not {JOIN_AND_TURN, STAMPING, NO_PROCESSOR} <= costs.keys():
        return ["(a contender did not run: no processor figures)"]
    llm_span = alone.floor_us
    lines = [
        f"SessionSpanProcessor per web request ({request.spans.get('floor', 0):.0f} spans; "
        f"one bare LLM span with 10 messages = {llm_span:.1f} µs, "
        f"the request's bare spans = {request.floor_us:.1f} µs):"
    ]
    for label, cost in (
        ("join+turn vs no processor", costs[JOIN_AND_TURN] - costs[NO_PROCESSOR]),
        ("stamping only vs no processor", costs[STAMPING] - costs[NO_PROCESSOR]),
        ("join+turn vs stamping only", costs[JOIN_AND_TURN] - costs[STAMPING]),
    ):
        lines.append(
            f"  {label}: {cost:.1f} µs = {cost / llm_span:.2f}x one bare LLM span, "
            f"{cost / request.floor_us:.2f}x the request's bare spans"
        )
    alone_cost = alone.overhead_us[JOIN_AND_TURN] - alone.overhead_us[NO_PROCESSOR]
    lines.append(
        f"  an LLM span alone (it is its own root), join+turn vs no processor: "
        f"{alone_cost:.1f} µs = {alone_cost / llm_span:.2f}x one bare LLM span"
    )
    return lines


SUITE = SessionsSuite()

if __name__ == "__main__":
    main(SUITE, __file__)
