"""One convotel adapter installed alone from its wheel, loaded by ``opentelemetry-instrument``.

Run by ``nox -s alone`` in a fresh virtualenv that holds only the core wheel, one adapter's wheel
and that adapter's SDK (then, for the second and third runs, another project's instrumentor
of the same SDK registered under the SDK's name)::

    opentelemetry-instrument python instrument_alone.py ADAPTER NAME=on|off [NAME=on|off ...]

Each ``NAME=on|off`` says whether the instrumentor registered under that entry-point name must
have been instrumented by ``opentelemetry-instrument`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
turns one off by name). Then one call through the real SDK, answered offline (httpx's
MockTransport, LlamaIndex's MockLLM, DSPy's DummyLM), must give convotel spans carrying the
session id when convotel's instrumentor is on, and none when it is off. Exits 1 on any failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.metadata import distributions, entry_points, requires

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session

SESSION = "alone-session"
#: The framework SDKs' distributions (a requirement of the core or an adapter names none).
SDK_DISTRIBUTIONS = ("openai", "mistralai", "llama-index", "llama_index", "dspy")


def call_openai() -> str:
    import openai
    import openai._base_client

    httpx = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx  # 3.x: httpx2
    body = {
        "id": "c-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }  # fmt: skip
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    client = openai.OpenAI(api_key="sk-test", http_client=httpx.Client(transport=transport))
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


def call_mistralai() -> str:
    from mistralai.client import Mistral, httpclient

    httpx = getattr(httpclient, "httpx", None) or __import__("httpx")  # 3.x: httpx2

    body = {
        "id": "m-1", "object": "chat.completion", "created": 0, "model": "mistral-small-latest",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }  # fmt: skip
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    client = Mistral(api_key="test-key", client=httpx.Client(transport=transport))
    reply = client.chat.complete(
        model="mistral-small-latest", messages=[{"role": "user", "content": "hi"}]
    )
    return str(reply.choices[0].message.content)


def call_llama_index() -> str:
    from llama_index.core.llms import MockLLM

    return MockLLM().complete("hello").text  # MockLLM echoes the prompt


def call_dspy() -> str:
    import dspy
    from dspy.utils import DummyLM

    dspy.configure(lm=DummyLM([{"answer": "hello"}]))
    return str(dspy.Predict("question -> answer")(question="Say hello").answer)


CALLS: dict[str, Callable[[], str]] = {
    "openai": call_openai,
    "mistralai": call_mistralai,
    "llama_index": call_llama_index,
    "dspy": call_dspy,
}


def main(adapter: str, expectations: list[str]) -> list[str]:
    problems: list[str] = []
    ours = f"convotel_{adapter}"
    installed = sorted(
        d.metadata["Name"] for d in distributions() if d.metadata["Name"].startswith("convotel")
    )
    if installed != sorted(["convotel", f"convotel-{adapter.replace('_', '-')}"]):
        problems.append(f"convotel distributions installed: {installed}")
    # The core and the adapter bring no framework SDK of their own (the adapter's SDK may bring
    # another: DSPy needs openai through litellm).
    for name in installed:
        for requirement in requires(name) or []:
            if ";" not in requirement and requirement.startswith(SDK_DISTRIBUTIONS):
                problems.append(f"{name} requires {requirement}")

    registered = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor")}
    expected: dict[str, bool] = {}
    for expectation in expectations:
        name, _, state = expectation.partition("=")
        expected[name] = state == "on"
        if name not in registered:
            problems.append(f"no opentelemetry_instrumentor entry point named {name!r}")
            continue
        instrumentor = registered[name].load()()  # BaseInstrumentor is a singleton per class
        if instrumentor.is_instrumented_by_opentelemetry != expected[name]:
            problems.append(
                f"{name}: instrumented is {instrumentor.is_instrumented_by_opentelemetry}"
            )
    if ours not in expected:
        problems.append(f"say whether {ours} must be on")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        problems.append("another tracer provider was already set")
    with using_session(SESSION):
        answer = CALLS[adapter]()
    if answer != "hello":
        problems.append(f"the call answered {answer!r}")
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope.name == f"convotel.{adapter}"
    ]
    summary = [
        [s.name, s.attributes.get("openinference.span.kind"), s.attributes.get("session.id")]
        for s in spans
    ]
    print(json.dumps({"adapter": adapter, "expected": expected, "convotel_spans": summary}))
    if expected.get(ours):
        if not spans:
            problems.append(f"no span from convotel.{adapter}")
        if any(s.attributes.get("session.id") != SESSION for s in spans):
            problems.append(f"a convotel.{adapter} span without session.id={SESSION}")
    elif spans:
        problems.append(f"{ours} is off, yet convotel.{adapter} recorded {len(spans)} spans")
    return problems


if __name__ == "__main__":
    found = main(sys.argv[1], sys.argv[2:])
    for problem in found:
        print(f"PROBLEM {problem}")
    sys.exit(1 if found else 0)
