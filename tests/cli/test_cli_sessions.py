"""`convotel sessions` and `convotel sessions show` on a store written through the exporter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_store import LONG_QUESTION

from convotel.cli import main

BY_RECENCY = ["s-long", "s-broken", "s-weather", "s-old"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(output: str) -> list[list[str]]:
    """Cells of the table's rows (columns are separated by at least two spaces)."""
    lines = output.split("\n\n")[0].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


def listed_ids(output: str) -> list[str]:
    return [row[0] for row in table_rows(output)[1:]]


def test_sessions_are_listed_most_recent_first_with_every_column(
    capsys: pytest.CaptureFixture[str], scenario_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, out, err = run(capsys, "sessions", "--store", str(scenario_store))

    assert (code, err) == (0, "")
    header, *rows = table_rows(out)
    assert header == [
        "SESSION",
        "USER",
        "TURNS",
        "FIRST",
        "LAST",
        "LATENCY",
        "TOK IN",
        "TOK OUT",
        "ERRORS",
        "FIRST INPUT",
        "LAST OUTPUT",
    ]
    assert [row[0] for row in rows] == BY_RECENCY
    by_id = {row[0]: row for row in rows}
    assert by_id["s-weather"][1:3] == ["alice", "2"]
    assert by_id["s-weather"][5:] == ["1.00 s", "50", "13", "0", "weather in Paris?", "Rain, 12°C."]
    assert by_id["s-broken"][1:3] == ["bob", "2"]
    assert by_id["s-broken"][8:] == ["1", "hello?", "Hi Bob!"]
    assert by_id["s-long"][9].startswith("Please summarise the quarterly")
    assert by_id["s-long"][9].endswith("…")
    assert f"4 sessions from {scenario_store}" in out
    assert all(len(line) <= 160 for line in out.splitlines())


@pytest.mark.parametrize("columns", [200, 120, 100, 80])
def test_the_table_fits_the_terminal_width(
    capsys: pytest.CaptureFixture[str],
    scenario_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    columns: int,
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))

    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store))

    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= columns
    header = table_rows(out)[0]
    assert {"SESSION", "USER", "TURNS", "LAST", "TOK IN", "TOK OUT", "ERRORS"} <= set(header)
    assert listed_ids(out) == BY_RECENCY


def test_json_lists_full_values_for_scripts(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "--json")

    assert code == 0
    listed: list[dict[str, Any]] = json.loads(out)
    assert [entry["session_id"] for entry in listed] == BY_RECENCY
    long, broken = listed[0], listed[1]
    assert long["first_input"] == LONG_QUESTION
    assert broken == {
        **broken,
        "user_id": "bob",
        "user_ids": ["bob"],
        "turn_count": 2,
        "llm_calls": 2,
        "tokens": {"prompt": 20, "completion": 10, "total": 30},
        "errors": 1,
        "total_latency_ms": 1000.0,
        "first_input": "hello?",
        "last_output": "Hi Bob!",
    }
    first = datetime.fromisoformat(broken["first_time"].replace("Z", "+00:00"))
    last = datetime.fromisoformat(broken["last_time"].replace("Z", "+00:00"))
    assert last - first == timedelta(milliseconds=1500)
    assert timedelta(minutes=9) < datetime.now(timezone.utc) - first < timedelta(minutes=11)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--user", "alice"], ["s-weather", "s-old"]),
        (["--since", "30m"], ["s-long", "s-broken", "s-weather"]),
        (["--until", "1h"], ["s-old"]),
        (["--since", "4h", "--until", "15m"], ["s-weather", "s-old"]),
        (["--errors-only"], ["s-broken"]),
        (["--user", "alice", "--since", "1h"], ["s-weather"]),
        (["--limit", "2"], ["s-long", "s-broken"]),
    ],
)
def test_filters(
    capsys: pytest.CaptureFixture[str],
    scenario_store: Path,
    filters: list[str],
    expected: list[str],
) -> None:
    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "--json", *filters)

    assert code == 0
    assert [entry["session_id"] for entry in json.loads(out)] == expected


def test_since_accepts_an_iso_time(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    since = (datetime.now(timezone.utc) - timedelta(minutes=15)).isoformat()

    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "--since", since)

    assert code == 0
    assert listed_ids(out) == ["s-long", "s-broken"]


def test_limit_reached_says_there_may_be_more(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "--limit", "1")

    assert code == 0
    assert listed_ids(out) == ["s-long"]
    assert "1 sessions (--limit to see more)" in out


def test_no_match_says_so(capsys: pytest.CaptureFixture[str], scenario_store: Path) -> None:
    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "--user", "zoe")

    assert code == 0
    assert out.strip() == f"No sessions matching these filters in {scenario_store}."


def test_bad_time_filter_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sessions", "--store", str(scenario_store), "--since", "yesterday-ish"])

    assert exit_info.value.code == 2
    assert "neither an ISO time" in capsys.readouterr().err


def test_show_prints_the_conversation_turn_by_turn(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, err = run(capsys, "sessions", "show", "s-weather", "--store", str(scenario_store))

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Session   s-weather"
    assert lines[1] == "User      alice"
    assert lines[2] == "Turns     2  |  LLM calls 2  |  errors 0"
    assert lines[3] == "Tokens    50 in / 13 out (63 total)"
    assert "total latency 1.00 s" in lines[4]
    turn_headers = [line for line in lines if line.startswith("-- Turn")]
    assert len(turn_headers) == 2
    assert "| 500 ms | 10 in / 5 out | 1 LLM call ---" in turn_headers[0]
    assert sum(1 for line in lines if re.fullmatch(r"    trace   [0-9a-f]{32}", line)) == 2
    assert "    user    weather in Paris?" in lines
    assert '    tool    get_weather({"city": "Paris"})' in lines
    assert "(no output recorded)" not in out  # the model answered with a tool call
    assert "    user    and tomorrow?" in lines
    assert "    model   Rain, 12°C." in lines
    assert all(len(line) <= 120 for line in lines)


def test_show_reports_errors_of_a_turn(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, _ = run(capsys, "sessions", "--store", str(scenario_store), "show", "s-broken")

    assert code == 0
    assert "    error   ChatCompletion: APIStatusError: 503 upstream unavailable" in out
    assert "Turns     2  |  LLM calls 2  |  errors 1" in out


def test_show_wraps_long_text_to_the_terminal(
    capsys: pytest.CaptureFixture[str], scenario_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "70")

    code, out, _ = run(capsys, "sessions", "show", "s-long", "--store", str(scenario_store))

    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 70 for line in lines)
    user_at = lines.index(next(line for line in lines if line.startswith("    user    Please")))
    assert lines[user_at + 1].startswith(" " * 12)  # continuation aligned under the text
    wrapped = " ".join(line.strip() for line in lines[user_at : user_at + 8])
    assert "the quarterly report in great detail the quarterly" in wrapped


def test_show_json_includes_every_turn(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, _ = run(
        capsys, "sessions", "show", "s-weather", "--json", "--store", str(scenario_store)
    )

    assert code == 0
    session = json.loads(out)
    assert session["session_id"] == "s-weather"
    first, second = session["turns"]
    assert first["tool_calls"] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}', "id": None}
    ]
    assert first["output"] is None
    assert second["output"] == "Rain, 12°C."
    assert second["tokens"] == {"prompt": 40, "completion": 8, "total": 48}
    assert second["latency_ms"] == 500.0


def test_show_accepts_an_unambiguous_id_prefix(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, _ = run(capsys, "sessions", "show", "s-we", "--store", str(scenario_store))

    assert code == 0
    assert out.startswith("Session   s-weather\n")


def test_show_explains_an_ambiguous_prefix(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, out, err = run(capsys, "sessions", "show", "s-", "--store", str(scenario_store))

    assert (code, out) == (1, "")
    assert "'s-' matches 4 sessions" in err


def test_show_explains_an_unknown_session(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    code, _, err = run(capsys, "sessions", "show", "nope", "--store", str(scenario_store))

    assert code == 1
    assert f"no session 'nope' in {scenario_store}" in err
    assert "convotel sessions" in err


def test_store_path_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], scenario_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOTEL_STORE", str(scenario_store))

    code, out, _ = run(capsys, "sessions", "--json")

    assert code == 0
    assert len(json.loads(out)) == 4


def test_missing_store_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code, out, err = run(capsys, "sessions")

    assert (code, out) == (1, "")
    assert str(tmp_path / ".convotel" / "spans.sqlite3") in err
    assert "no span store here yet" in err
    assert not (tmp_path / ".convotel").exists()


def test_corrupt_store_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"garbage" * 1000)

    code, _, err = run(capsys, "sessions", "show", "s-1", "--store", str(broken))

    assert code == 1
    assert err.startswith(f"convotel: convotel span store {broken}: the file is not a readable")
    assert "Move it aside" in err


def test_the_console_script_runs(scenario_store: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "convotel.cli",
            "sessions",
            "--json",
            "--store",
            str(scenario_store),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert [entry["session_id"] for entry in json.loads(completed.stdout)] == BY_RECENCY


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)

    assert code == 2
    assert "sessions" in err
    assert "demo" in err
