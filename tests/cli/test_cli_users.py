"""`convotel users` and `convotel users show USER`, run as the console command on a store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def convotel(*argv: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convotel.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def users_json(store: Path, *argv: str) -> list[dict[str, Any]]:
    completed = convotel("users", "--json", "--store", str(store), *argv)
    assert (completed.returncode, completed.stderr) == (0, "")
    listed: list[dict[str, Any]] = json.loads(completed.stdout)
    return listed


def test_users_sum_their_sessions_most_recently_seen_first(scenario_store: Path) -> None:
    listed = users_json(scenario_store)
    # s-long (carol) is the most recent; the session without an id belongs to no user's sessions
    assert [user["user_id"] for user in listed] == ["carol", "bob", "alice"]
    alice = listed[2]
    assert alice == {
        **alice,
        "session_count": 2,  # s-old and s-weather
        "turn_count": 4,
        "llm_calls": 4,
        "tokens": {"prompt": 80, "completion": 21, "total": 101},
        "errors": 0,
        "cost_usd": None,  # the scenario's spans carry no cost
    }
    assert alice["first_seen"] < alice["last_seen"]
    bob = listed[1]
    assert (bob["session_count"], bob["turn_count"], bob["errors"]) == (1, 2, 1)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--user", "alice"), ["alice"]),
        (("--errors-only",), ["bob"]),
        (("--since", "30m"), ["carol", "bob", "alice"]),
        (("--until", "60m"), ["alice"]),
        (("--limit", "1"), ["carol"]),
        (("--source", "openai.conversation"), []),
    ],
)
def test_users_take_the_filters_of_sessions(
    scenario_store: Path, argv: tuple[str, ...], expected: list[str]
) -> None:
    assert [user["user_id"] for user in users_json(scenario_store, *argv)] == expected


def test_since_counts_only_the_sessions_it_picks(scenario_store: Path) -> None:
    (alice,) = users_json(scenario_store, "--user", "alice", "--since", "30m")
    assert alice["session_count"] == 1  # s-weather; s-old was three hours ago


def test_users_table(scenario_store: Path) -> None:
    completed = convotel("users", "--store", str(scenario_store))
    assert (completed.returncode, completed.stderr) == (0, "")
    lines = completed.stdout.split("\n\n")[0].splitlines()
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    assert rows[0] == [
        "USER",
        "SESSIONS",
        "TURNS",
        "TOK IN",
        "TOK OUT",
        "COST",
        "ERRORS",
        "FIRST SEEN",
        "LAST SEEN",
    ]
    assert [row[:7] for row in rows[1:]] == [
        ["carol", "1", "1", "10", "5", "-", "0"],
        ["bob", "1", "2", "20", "10", "-", "1"],
        ["alice", "2", "4", "80", "21", "-", "0"],
    ]
    assert f"3 users from {scenario_store}" in completed.stdout
    assert max(len(line) for line in completed.stdout.splitlines()[:4]) <= 120


def test_users_show_lists_that_users_sessions(scenario_store: Path) -> None:
    completed = convotel("users", "show", "alice", "--store", str(scenario_store))
    assert (completed.returncode, completed.stderr) == (0, "")
    out = completed.stdout
    assert out.startswith("User      alice\nSessions  2  |  turns 4  |  LLM calls 4  |  errors 0")
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split()[:3] == ["SESSION", "USER", "TURNS"]
    assert [line.split()[0] for line in table[1:]] == ["s-weather", "s-old"]

    shown = json.loads(
        convotel("users", "show", "alice", "--json", "--store", str(scenario_store)).stdout
    )
    assert [s["session_id"] for s in shown["sessions"]] == ["s-weather", "s-old"]
    assert shown["turn_count"] == 4


def test_unknown_user_is_a_clear_error(scenario_store: Path) -> None:
    completed = convotel("users", "show", "mallory", "--store", str(scenario_store))
    assert completed.returncode == 1
    assert "no sessions of user 'mallory'" in completed.stderr
    assert completed.stdout == ""


def test_empty_store_says_so(tmp_path: Path) -> None:
    completed = convotel("users", "--store", str(tmp_path / "none.sqlite3"))
    assert completed.returncode == 1
    assert "no span store here yet" in completed.stderr
    assert "Traceback" not in completed.stderr
