"""Every overhead benchmark in one run, each one's table, then one table of all adapters.

    python benchmarks/run_all.py                     # every bench_*.py, then the combined table
    python benchmarks/run_all.py --rounds 10         # quicker, noisier (default: each bench's own)
    python benchmarks/run_all.py --only dspy,openai  # some adapters
    python benchmarks/run_all.py --markdown --json results.json
    python benchmarks/run_all.py --from-json results.json --markdown  # re-render, no timing

The combined table has one row per adapter and call kind. "x call": overhead as a multiple of the
uninstrumented call (for openai and mistralai the whole SDK call on an in-process mock transport,
with no network; for llama_index and dspy the framework call with an in-process stub LLM); "x
floor": as a multiple of starting and ending convotel's spans for that call on the bare SDK,
back to back; "x floor in situ": of the same spans replayed after each uninstrumented call (as
spans run between an application's own work); "own code x floor": convotel's overhead on a no-op
tracer (its own code: extraction, bookkeeping) and "span work x floor": the rest (the SDK's work
for its spans, at its hook points), each over the floor; the last columns divide convotel's
overhead by the other instrumentors'. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_harness import Row, SuiteResult, measure, render  # noqa: E402 - after the path insert

#: The columns of the combined table, convotel first.
CONTENDERS = ("convotel", "OpenInference", "OpenLLMetry")


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def run(path: Path, rounds: int | None) -> SuiteResult:
    """One benchmark script's suite: its measurement and its own report."""
    suite = load(path).SUITE
    result = measure(suite, str(path), rounds or suite.default_rounds)
    suite.report(result)
    return result


def multiple(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2g}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "—"
    return f"{numerator / denominator:.2f}"


def convotel_split(row: Row, overhead: float | None) -> list[str]:
    """convotel's overhead over the floor in situ, then split: its own code and the span work
    at its hook points (the rest), each over the floor."""
    if overhead is None:
        return ["—", "—", "—"]
    in_situ, own = row.in_situ_floor_us, row.own_code_us
    cells = [multiple(overhead / in_situ) if in_situ else "—"]
    if own is None:
        return [*cells, "—", "—"]
    return [*cells, multiple(own / row.floor_us), multiple((overhead - own) / row.floor_us)]


def combined_rows(results: list[SuiteResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for row in result.rows:
            if not row.combined:
                continue
            cells = [result.adapter, row.scenario, f"{row.call_us:,.0f}"]
            for contender in CONTENDERS:
                overhead = row.overhead_us.get(contender)
                if overhead is None:
                    cells += ["—", "—"]
                else:
                    cells += [multiple(overhead / row.floor_us), multiple(overhead / row.call_us)]
                if contender == CONTENDERS[0]:
                    cells[-1:-1] = convotel_split(row, overhead)
            convotel = row.overhead_us.get("convotel")
            cells += [
                ratio(convotel, row.overhead_us.get(other))
                for other in ("OpenInference", "OpenLLMetry")
            ]
            rows.append(cells)
    return rows


def combined_table(results: list[SuiteResult], markdown: bool) -> str:
    headers = ["adapter", "call", "uninstrumented µs"]
    for contender in CONTENDERS:
        headers += [f"{contender} x floor", "x call"]
        if contender == CONTENDERS[0]:
            headers[-1:-1] = ["x floor in situ", "own code x floor", "span work x floor"]
    headers += ["convotel / OpenInference", "convotel / OpenLLMetry"]
    notes = [
        f"{label} ({result.adapter}): {why}"
        for result in results
        for label, why in result.unavailable.items()
        if label in CONTENDERS
    ]
    table = render(headers, combined_rows(results), markdown, left=2)
    if markdown:
        return table + "".join(
            f"\n\n{note}" if i == 0 else f"; {note}" for i, note in enumerate(notes)
        )
    return "\n".join([table, *(f"  {note}" for note in notes)])


def provenance(results: list[SuiteResult], date: str, machine: str) -> str:
    versions = {name: v for result in results for name, v in result.versions.items()}
    sdks = [
        name for name in versions if not name.startswith(("convotel", "openinference", "opentel"))
    ]
    others = [name for name in versions if name.startswith(("openinference", "opentel"))]
    rounds = ", ".join(f"{r.adapter} {r.rounds}" for r in results)
    return (
        f"{date}, {machine}, Python {results[0].python if results else '?'}; "
        + ", ".join(f"{name} {versions[name]}" for name in sdks)
        + "; "
        + ", ".join(f"{name} {versions[name]}" for name in others)
        + f"; rounds: {rounds}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="rounds for every bench (default: its own)")
    parser.add_argument("--only", help="comma-separated adapters, e.g. openai,dspy")
    parser.add_argument(
        "--markdown", action="store_true", help="print the combined table as Markdown"
    )
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--from-json", help="render results written by --json instead of timing")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()}")
    arguments = parser.parse_args()
    if arguments.from_json:
        with open(arguments.from_json, encoding="utf-8") as file:
            results = [SuiteResult.from_json(data) for data in json.load(file)]
    else:
        wanted = set(arguments.only.split(",")) if arguments.only else None
        results = []
        for path in sorted(HERE.glob("bench_*.py")):
            name = path.stem.removeprefix("bench_")
            if name == "harness" or (wanted is not None and name not in wanted):
                continue
            print(f"\n=== {path.name}", flush=True)
            started = time.monotonic()
            results.append(run(path, arguments.rounds))
            print(f"({path.name}: {time.monotonic() - started:.0f} s)", flush=True)
        if arguments.json:
            with open(arguments.json, "w", encoding="utf-8") as file:
                json.dump([result.to_json() for result in results], file, indent=2)
    order = {adapter: i for i, adapter in enumerate(("openai", "mistralai", "llama_index", "dspy"))}
    results.sort(key=lambda result: order.get(result.adapter, len(order)))
    print("\n=== All adapters: overhead per call (CPU time, the least of the rounds)\n")
    print(provenance(results, arguments.date, arguments.machine) + "\n")
    print(combined_table(results, arguments.markdown))


if __name__ == "__main__":
    main()
