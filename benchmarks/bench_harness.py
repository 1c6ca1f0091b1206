"""Shared machinery of the overhead benchmarks: workers, interleaved rounds, the floor, the tables.

A benchmark describes itself as a :class:`Suite` (its scenarios, its contenders and how to make one
call) and hands it to :func:`main`. The parent process starts one worker process per contender,
plus one for the uninstrumented call and one for the *floor* (the spans convotel records for each
call, replayed through the bare OpenTelemetry SDK), sends them timed batches in a random order,
round after round, and keeps the least CPU time per call of the rounds. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TextIO

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session, using_user

Batch = Callable[[int], float]  # run n calls, return CPU microseconds per call

#: Roles of the workers that are not contenders. OWN_CODE is convotel on a no-op tracer: its
#: overhead is convotel's own code (extraction, bookkeeping) without the SDK's span work.
UNINSTRUMENTED, SDK_CALL, FLOOR, IN_SITU = "none", "sdk", "floor", "floor-in-situ"
OWN_CODE = "convotel-own-code"
#: The roles every suite runs besides its contenders (their failure stops the bench).
REFERENCE_ROLES = (UNINSTRUMENTED, SDK_CALL, FLOOR, IN_SITU, OWN_CODE)
#: Calls each batch makes once before any timing (imports, caches, lazy initialisation).
WARM_UP_CALLS = 3
#: ``--profile`` runs this many batches' worth of calls of each scenario under cProfile.
PROFILE_BATCHES = 10


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def counting_provider() -> tuple[TracerProvider, CountingExporter]:
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# --- timing -------------------------------------------------------------------------------------


def sync_batch(call: Callable[[], object]) -> Batch:
    """Time ``call`` in process CPU time (all threads: frameworks hand work to threads)."""

    def run(n: int) -> float:
        start = time.process_time_ns()
        for _ in range(n):
            call()
        return (time.process_time_ns() - start) / n / 1000

    return run


def async_batch(call: Callable[[], Awaitable[object]], loop: asyncio.AbstractEventLoop) -> Batch:
    """Time awaiting ``call()`` on ``loop`` (one loop per worker, like one per application)."""

    async def calls(n: int) -> float:
        start = time.process_time_ns()
        for _ in range(n):
            await call()
        return (time.process_time_ns() - start) / n / 1000

    return lambda n: loop.run_until_complete(calls(n))


# --- what a benchmark declares ------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str  # what the application calls, e.g. "chat.complete"
    kind: str  # "sync", "async" or "stream": the row of the combined table
    calls: int  # calls per timed batch
    sdk_calls: int = 0  # calls per batch of whole SDK calls (stubbed suites), 0: ``calls``
    combined: bool = True  # a row of run_all.py's combined table (False: the bench's own only)


@dataclass(frozen=True)
class Contender:
    label: str  # the column: "convotel", "OpenInference", "OpenLLMetry"
    distribution: str
    module: str
    class_name: str

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ImportError:
            return False

    def instrumentor(self) -> Any:
        return getattr(importlib.import_module(self.module), self.class_name)()


class Suite(ABC):
    """One adapter's benchmark: scenarios, contenders (convotel first) and how to call."""

    adapter: ClassVar[str]
    #: SDK distributions whose versions the tables name.
    distributions: ClassVar[tuple[str, ...]]
    scenarios: ClassVar[tuple[Scenario, ...]]
    contenders: ClassVar[tuple[Contender, ...]]
    #: Contenders that do not exist for this framework, with the reason shown instead.
    absent: ClassVar[dict[str, str]] = {}
    #: Whether ``setup(stubbed=True)`` answers from stubs below every contender's hook; the
    #: whole SDK call is then timed apart (for the "x call" column), and ``--end-to-end`` times
    #: whole calls instead of stubbed ones.
    stubbed: ClassVar[bool] = False
    default_rounds: ClassVar[int] = 20
    #: Whether to time convotel's own code apart (the first contender on a no-op tracer, see
    #: :data:`OWN_CODE`); off for suites whose contenders are not instrumentors.
    splits_own_code: ClassVar[bool] = True
    #: Where a call can enter the SDK. On stubs, a contender hooking deeper than the others is
    #: timed from its own entry, against the uninstrumented call entering there too
    #: (bench_openai.py: OpenInference hooks ``OpenAI.request()``); whole calls all enter at the
    #: first. One entry for most suites.
    entries: ClassVar[tuple[str, ...]] = ("call",)

    @abstractmethod
    def setup(self, stubbed: bool) -> None:
        """Build the clients or programs; with ``stubbed``, install the stubs (before tracing)."""

    @abstractmethod
    def batch(self, scenario: Scenario) -> Batch:
        """The scenario's call, as the application makes it."""

    def entry_batch(self, scenario: Scenario, entry: str) -> Batch:
        """The scenario's call entering at ``entry`` (suites with several entries override)."""
        return self.batch(scenario)

    def entry(self) -> str:
        """The entry to time the active instrumentor from on stubs (after ``instrument()``)."""
        return self.entries[0]

    def before_instrument(self, contender: Contender) -> None:  # noqa: B027 - optional hook
        """Compatibility shims a contender needs before ``instrument()`` (none by default)."""

    def report(self, result: SuiteResult) -> None:
        """Print the results (suites with more to say extend it)."""
        print_report(result)

    def contender(self, label: str) -> Contender:
        return next(c for c in self.contenders if c.label == label)

    def versions(self) -> dict[str, str]:
        found = {}
        for name in (*self.distributions, *(c.distribution for c in self.contenders)):
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return found


# --- the worker process -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedSpan:
    name: str
    attributes: dict[str, Any]
    parent: int | None  # index of the parent in start order, None for a root


def record_convotel_spans(suite: Suite, scenario: Scenario) -> tuple[list[RecordedSpan], list[int]]:
    """The spans convotel records for one call (in start order) and the order they end in."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = suite.contenders[0].instrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        suite.batch(scenario)(1)
    finally:
        instrumentor.uninstrument()
    finished = exporter.get_finished_spans()
    started = sorted(finished, key=lambda span: span.start_time or 0)
    index = {span.context.span_id: i for i, span in enumerate(started) if span.context}
    recorded = [
        RecordedSpan(
            span.name,
            dict(span.attributes or {}),
            index.get(span.parent.span_id) if span.parent else None,
        )
        for span in started
    ]
    end_order = sorted(range(len(started)), key=lambda i: started[i].end_time or 0)
    return recorded, end_order


def floor_replay(
    provider: TracerProvider, spans: list[RecordedSpan], end_order: list[int]
) -> Callable[[], None]:
    """Start and end the recorded spans (same names, attributes, nesting) on the bare SDK."""
    tracer = provider.get_tracer("floor")

    def replay() -> None:
        started: list[trace.Span] = []
        for recorded in spans:
            parent = None if recorded.parent is None else started[recorded.parent]
            context = None if parent is None else trace.set_span_in_context(parent)
            span = tracer.start_span(recorded.name, context=context)
            span.set_attributes(recorded.attributes)
            started.append(span)
        for position in end_order:
            started[position].end()

    return replay


def floor_batch(provider: TracerProvider, spans: list[RecordedSpan], end_order: list[int]) -> Batch:
    """The floor: the recorded spans replayed back to back (the SDK's code and data stay hot)."""
    return sync_batch(floor_replay(provider, spans, end_order))


def in_situ_floor_batch(call: Batch, replay: Callable[[], None]) -> Batch:
    """The floor *in situ*: the same replay timed after each uninstrumented call, as a tracer's
    spans run between the application's own work (which evicts the SDK's code and data from the
    CPU caches a back-to-back replay keeps them in). Only the replay is timed."""

    def run(n: int) -> float:
        spent = 0
        for _ in range(n):
            call(1)
            start = time.process_time_ns()
            replay()
            spent += time.process_time_ns() - start
        return spent / n / 1000

    return run


def pin_to_one_core() -> None:
    """Run this worker (all its threads) on one core, the same for every worker (the parent runs
    one batch at a time). Frameworks hand work to threads: spread over cores, each hand-over
    of the GIL costs a cross-core wake-up, and how often that happens varies from process to
    process (DSPy's streamify: least CPU time 3.6 or 4.2 ms by process, 2.56 ms +-1% pinned)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def serve(suite: Suite, role: str, stubbed: bool) -> None:
    """Serve timed batches for one role: read "scenario entry n", answer µs per call.

    The protocol runs on the process's original stdout; anything a library prints goes to stderr.
    """
    protocol: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    pin_to_one_core()
    with using_session("bench-session"), using_user("bench-user"):
        suite.setup(stubbed=stubbed and role != SDK_CALL)
        provider, exporter = counting_provider()
        entry = suite.entries[0]
        batches: dict[tuple[int, str], Batch] = {}
        if role == FLOOR:
            for index, scenario in enumerate(suite.scenarios):
                recorded = record_convotel_spans(suite, scenario)
                batches[(index, entry)] = floor_batch(provider, *recorded)
        elif role == IN_SITU:
            for index, scenario in enumerate(suite.scenarios):
                replay = floor_replay(provider, *record_convotel_spans(suite, scenario))
                call = suite.entry_batch(scenario, entry)
                batches[(index, entry)] = in_situ_floor_batch(call, replay)
        else:
            if role not in (UNINSTRUMENTED, SDK_CALL):
                contender = suite.contenders[0] if role == OWN_CODE else suite.contender(role)
                traced_by = trace.NoOpTracerProvider() if role == OWN_CODE else provider
                try:
                    suite.before_instrument(contender)
                    contender.instrumentor().instrument(tracer_provider=traced_by)
                except Exception as exc:  # noqa: BLE001 - reported as "not usable", not fatal
                    protocol.write(f"unavailable {type(exc).__name__}: {exc}".splitlines()[0])
                    protocol.write("\n")
                    return
                entry = suite.entry() if stubbed else entry
            entries = suite.entries if role == UNINSTRUMENTED and stubbed else (entry,)
            for index, scenario in enumerate(suite.scenarios):
                for name in entries:
                    batches[(index, name)] = suite.entry_batch(scenario, name)
        spans_per_call = [0.0] * len(suite.scenarios)
        for (index, name), batch in batches.items():
            exported = exporter.count
            batch(WARM_UP_CALLS)
            if name == entry:
                spans_per_call[index] = (exporter.count - exported) / WARM_UP_CALLS
        gc.collect()
        gc.freeze()  # what setup made stays put: the collection before each batch stays quick
        protocol.write(f"ready {entry} {json.dumps(spans_per_call)}\n")
        for line in sys.stdin:
            index_text, name, n_text = line.split()
            gc.collect()
            gc.disable()
            try:
                microseconds = batches[(int(index_text), name)](int(n_text))
            finally:
                gc.enable()
            protocol.write(f"{microseconds}\n")


class Worker:
    """The parent's handle on one worker process (started by :func:`start_workers`)."""

    def __init__(self, script: str, role: str, end_to_end: bool) -> None:
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, script, "--worker", role, *(["--end-to-end"] if end_to_end else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.entry = ""
        self.spans: list[float] = []
        self.failure: str | None = None

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line.startswith("ready "):
            _, self.entry, spans = line.split(" ", 2)
            self.spans = json.loads(spans)
            return
        self.failure = line.removeprefix("unavailable ") or "the worker died (see stderr)"
        self.close()

    def time(self, scenario: int, entry: str, n: int) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{scenario} {entry} {n}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def start_workers(script: str, roles: Sequence[str], end_to_end: bool) -> list[Worker]:
    """Start every worker at once (their imports overlap), then wait for each to be ready."""
    workers = [Worker(script, role, end_to_end) for role in roles]
    for worker in workers:
        worker.wait_ready()
    return workers


# --- measuring and reporting --------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    kind: str
    call_us: float  # the uninstrumented call through the whole SDK or framework
    floor_us: float  # convotel's spans for this call on the bare SDK
    overhead_us: dict[str, float]  # contender -> instrumented minus uninstrumented
    spans: dict[str, float] = field(default_factory=dict)  # contender -> spans per call
    combined: bool = True  # a row of run_all.py's combined table
    in_situ_floor_us: float | None = None  # the floor replayed after each call (None: not timed)
    #: convotel's overhead on a no-op tracer: its own code without the SDK's span work (None:
    #: not timed); the rest of its overhead is the span work at its hook points.
    own_code_us: float | None = None


@dataclass
class SuiteResult:
    adapter: str
    versions: dict[str, str]
    rounds: int
    stubbed: bool
    contenders: list[str]  # every column, measured or not
    unavailable: dict[str, str]  # contender -> why it has no numbers
    rows: list[Row]
    python: str = field(default_factory=platform.python_version)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteResult:
        rows = [Row(**row) for row in data.pop("rows")]
        return cls(rows=rows, **data)


def measure(
    suite: Suite, script: str, rounds: int, seed: int = 0, end_to_end: bool = False
) -> SuiteResult:
    """Time every scenario under every role in interleaved rounds; keep the least per call.

    A stubbed suite is timed on its stubs, unless ``end_to_end`` asks for whole calls.
    """
    stubbed = suite.stubbed and not end_to_end
    entries = suite.entries if stubbed else suite.entries[:1]
    unavailable = dict(suite.absent)
    roles = [UNINSTRUMENTED, *([SDK_CALL] if stubbed else []), FLOOR, IN_SITU]
    if suite.splits_own_code:
        roles.append(OWN_CODE)
    for contender in suite.contenders:
        if contender.installed():
            roles.append(contender.label)
        else:
            unavailable[contender.label] = f"not installable ({contender.distribution})"
    print(f"{suite.adapter}: starting {', '.join(roles)}", flush=True)
    clock = time.monotonic()
    started = start_workers(script, roles, end_to_end=suite.stubbed and end_to_end)
    print(f"  workers ready in {time.monotonic() - clock:.0f} s", flush=True)
    for worker in started:
        if worker.failure is not None:
            if worker.role in REFERENCE_ROLES:
                raise RuntimeError(f"{suite.adapter} {worker.role} worker: {worker.failure}")
            unavailable[worker.role] = f"not usable: {worker.failure}"
            print(f"  {worker.role} is not usable: {worker.failure}", flush=True)
    workers = [worker for worker in started if worker.failure is None]
    samples: dict[tuple[str, int], list[float]] = {}
    order = random.Random(seed)
    try:
        for _ in range(rounds):
            for index, scenario in enumerate(suite.scenarios):
                for worker in order.sample(workers, len(workers)):
                    n = scenario.calls
                    if worker.role == SDK_CALL or (not stubbed and worker.role != FLOOR):
                        n = scenario.sdk_calls or scenario.calls  # whole calls: milliseconds
                    if worker.role == UNINSTRUMENTED:  # timed from every entry
                        for entry in entries:
                            key = (f"{UNINSTRUMENTED}@{entry}", index)
                            samples.setdefault(key, []).append(worker.time(index, entry, n))
                    else:
                        sample = worker.time(index, worker.entry, n)
                        samples.setdefault((worker.role, index), []).append(sample)
            print(".", end="", flush=True)
    finally:
        for worker in workers:
            worker.close()
    print(flush=True)
    measured = [w for w in workers if w.role not in REFERENCE_ROLES]
    own_code = next((w for w in workers if w.role == OWN_CODE), None)
    rows = []
    for index, scenario in enumerate(suite.scenarios):
        best = {role: min(values) for (role, i), values in samples.items() if i == index}
        # A tracer that records nothing (e.g. it refused a dependency version) has no overhead.
        tracing = [w for w in measured if w.spans[index] > 0]
        for worker in measured:
            if worker.spans[index] == 0:
                silent = unavailable.setdefault(worker.role, "records no span for:")
                unavailable[worker.role] = f"{silent} {scenario.name}"
        rows.append(
            Row(
                scenario.name,
                scenario.kind,
                best[SDK_CALL if stubbed else f"{UNINSTRUMENTED}@{entries[0]}"],
                best[FLOOR],
                {w.role: best[w.role] - best[f"{UNINSTRUMENTED}@{w.entry}"] for w in tracing},
                {w.role: w.spans[index] for w in measured},
                scenario.combined,
                best[IN_SITU],
                None
                if own_code is None
                else best[OWN_CODE] - best[f"{UNINSTRUMENTED}@{own_code.entry}"],
            )
        )
    floor = next(w for w in workers if w.role == FLOOR)
    for index, row in enumerate(rows):
        row.spans[FLOOR] = floor.spans[index]
    return SuiteResult(
        suite.adapter,
        suite.versions(),
        rounds,
        stubbed,
        [c.label for c in suite.contenders] + list(suite.absent),
        unavailable,
        rows,
    )


def render(
    headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, left: int = 1
) -> str:
    """A table in Markdown or plain text; the first ``left`` columns are left-aligned."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append(
            "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"
        )
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), *(line(row) for row in rows)])


def describe(result: SuiteResult) -> str:
    """One line: the adapter, its SDK and contender versions, the mode and the rounds."""
    versions = ", ".join(f"{name} {version}" for name, version in result.versions.items())
    mode = "timed on stubs below the hooks" if result.stubbed else "whole calls"
    return f"{result.adapter} ({mode}; {result.rounds} rounds): {versions}"


def suite_table(result: SuiteResult) -> str:
    """One adapter: the uninstrumented call, the floor, each contender's overhead (µs, x floor)."""
    headers = ["scenario", "spans", "call µs", "floor µs", "in situ µs", "own code µs"] + [
        f"{c} µs (x floor; spans)" for c in result.contenders
    ]
    rows = []
    for row in result.rows:
        cells = [
            row.scenario,
            f"{row.spans.get(FLOOR, 0):.0f}",
            f"{row.call_us:.1f}",
            f"{row.floor_us:.1f}",
            "n/a" if row.in_situ_floor_us is None else f"{row.in_situ_floor_us:.1f}",
            "n/a" if row.own_code_us is None else f"{row.own_code_us:.1f}",
        ]
        for contender in result.contenders:
            if contender in row.overhead_us:
                overhead = row.overhead_us[contender]
                spans = row.spans.get(contender, 0)
                cells.append(f"{overhead:.1f} ({overhead / row.floor_us:.1f}x; {spans:.0f})")
            else:
                cells.append("n/a")
        rows.append(cells)
    notes = [f"  {label}: {why}" for label, why in result.unavailable.items()]
    return "\n".join([describe(result), render(headers, rows, markdown=False), *notes])


def print_report(result: SuiteResult) -> None:
    print(suite_table(result))
    print(
        "(call = the uninstrumented call; floor = convotel's spans for that call on the bare SDK, "
        "replayed back to back; in situ = the same replay timed after each uninstrumented call; "
        "own code = convotel's overhead on a no-op tracer (the rest of its overhead is the span "
        "work at its hook points); spans = convotel's spans per call; CPU time per call, the "
        "least of the rounds)"
    )


def profile(suite: Suite, stubbed: bool) -> None:
    """cProfile convotel on every scenario: where its time goes, by own time."""
    with using_session("bench-session"), using_user("bench-user"):
        suite.setup(stubbed=stubbed)
        convotel = suite.contenders[0]
        suite.before_instrument(convotel)
        instrumentor = convotel.instrumentor()
        instrumentor.instrument(tracer_provider=counting_provider()[0])
        try:
            for scenario in suite.scenarios:
                run = suite.batch(scenario)
                run(WARM_UP_CALLS)
                calls = scenario.calls if stubbed else scenario.sdk_calls or scenario.calls
                n = calls * PROFILE_BATCHES
                profiler = cProfile.Profile()
                profiler.enable()
                run(n)
                profiler.disable()
                print(f"\n=== {scenario.name} x {n}: convotel, OpenTelemetry and wrapt by own time")
                stats = pstats.Stats(profiler).sort_stats("tottime")
                stats.print_stats(r"convotel|opentelemetry|wrapt", 20)
        finally:
            instrumentor.uninstrument()


def main(suite: Suite, script: str) -> None:
    """Command line of a benchmark script: the table, ``--profile``, or ``--worker ROLE``."""
    parser = argparse.ArgumentParser(
        description=(sys.modules["__main__"].__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=suite.default_rounds)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--profile", action="store_true", help="where convotel's time goes (cProfile), no table"
    )
    if suite.stubbed:
        parser.add_argument(
            "--end-to-end",
            action="store_true",
            help="time whole SDK calls instead of calls on stubs (needs a quiet machine)",
        )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    end_to_end = getattr(arguments, "end_to_end", False)
    stubbed = suite.stubbed and not end_to_end
    if arguments.worker:
        serve(suite, arguments.worker, stubbed)
        return
    if arguments.profile:
        profile(suite, stubbed)
        return
    result = measure(suite, script, arguments.rounds, end_to_end=end_to_end)
    suite.report(result)
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as file:
            json.dump(result.to_json(), file, indent=2)
