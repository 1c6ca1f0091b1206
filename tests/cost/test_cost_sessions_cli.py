"""A session's and a turn's cost: the read model, `convotel sessions` (--json, table, show)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convotel.cli.cost_text import format_cost
from convotel.sessions import build_sessions, span_cost
from convotel.store import SpanStore

genai_prices = pytest.importorskip("genai_prices")

sys.path.insert(0, str(Path(__file__).parent))
from cost_store import write_cost_store  # noqa: E402


def priced(model: str, **usage: int) -> float:
    calculation = genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id="openai")
    return float(calculation.total_price)


BASIC = priced("gpt-4o-mini-2024-07-18", input_tokens=24, output_tokens=8)
REASONING = priced(
    "o4-mini-2025-04-16",
    input_tokens=1200,
    cache_read_tokens=1024,
    output_tokens=300,
    output_reasoning_tokens=256,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cost") / "spans.sqlite3"
    write_cost_store(path)
    return path


def convotel(store: Path, *argv: str, columns: int = 160) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "convotel.cli", *argv, "--store", str(store)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    assert (completed.returncode, completed.stderr) == (0, ""), completed.stderr
    return completed.stdout


def test_session_and_turn_cost_are_the_sums_of_their_model_calls(store: Path) -> None:
    with SpanStore(store) as opened:
        sessions = {s.session_id: s for s in build_sessions(opened.spans())}
    priced_session = sessions["s-priced"]
    assert [turn.cost_usd for turn in priced_session.turns] == pytest.approx([BASIC, REASONING])
    assert priced_session.cost_usd == pytest.approx(BASIC + REASONING)
    assert priced_session.unpriced_llm_calls == 0
    assert sessions["s-mixed"].cost_usd == pytest.approx(BASIC)
    assert sessions["s-mixed"].unpriced_llm_calls == 1
    assert sessions["s-unknown"].cost_usd is None
    assert [span_cost(span) for span in sessions["s-unknown"].spans] == [None]


def test_json_has_cost_usd_on_sessions_and_turns(store: Path) -> None:
    listed = {s["session_id"]: s for s in json.loads(convotel(store, "sessions", "--json"))}
    assert listed["s-priced"]["cost_usd"] == pytest.approx(BASIC + REASONING)
    assert listed["s-mixed"]["unpriced_llm_calls"] == 1
    assert listed["s-unknown"]["cost_usd"] is None

    shown: dict[str, Any] = json.loads(convotel(store, "sessions", "show", "s-priced", "--json"))
    assert shown["cost_usd"] == pytest.approx(BASIC + REASONING)
    assert [turn["cost_usd"] for turn in shown["turns"]] == pytest.approx([BASIC, REASONING])


def test_table_has_a_cost_column_and_show_a_cost_line(store: Path) -> None:
    table = convotel(store, "sessions")
    header, *rows = (line.split() for line in table.split("\n\n")[0].splitlines())
    assert "COST" in header
    by_id = {row[0]: row for row in rows}
    assert format_cost(BASIC + REASONING) in by_id["s-priced"]
    assert format_cost(BASIC, 1) in by_id["s-mixed"]  # leaves out a call without a price
    assert format_cost(BASIC) == "$0.0000084"
    assert "-" in by_id["s-unknown"]

    shown = convotel(store, "sessions", "show", "s-mixed")
    assert "Cost      $0.0000084 USD (+ 1 model call without a price)" in shown
    assert "| $0.0000084 |" in shown  # the priced turn's header
    assert "Cost      - (no model call was priced)" in convotel(
        store, "sessions", "show", "s-unknown"
    )


def test_users_sum_their_sessions_cost(store: Path) -> None:
    listed = {u["user_id"]: u for u in json.loads(convotel(store, "users", "--json"))}
    assert listed["alice"]["cost_usd"] == pytest.approx(BASIC + REASONING + BASIC)
    assert listed["alice"]["unpriced_llm_calls"] == 1
    assert listed["bob"]["cost_usd"] is None
    table = convotel(store, "users")
    assert format_cost(BASIC + REASONING + BASIC, 1) in table
    shown = convotel(store, "users", "show", "alice")
    assert f"Cost      {format_cost(BASIC + REASONING + BASIC, 1)}" in shown
