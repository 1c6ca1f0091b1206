"""`convotel demo` is imported lazily from convotel.demo.app, with a clear message if missing."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType, SimpleNamespace

import pytest

import convotel.cli
from convotel.cli import main

real_import_module = importlib.import_module


def fail_import(missing: str) -> object:
    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == convotel.cli.DEMO_MODULE:
            error = ModuleNotFoundError(f"No module named {missing!r}")
            error.name = missing
            raise error
        return real_import_module(name, package)

    return import_module


def test_missing_demo_module_gives_a_clear_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib, "import_module", fail_import("convotel.demo.app"))

    assert main(["demo"]) == 2

    err = capsys.readouterr().err
    assert "the demo is not installed here (no module convotel.demo.app)" in err
    assert "nox -s demo" in err


def test_missing_demo_names_the_distribution_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib, "import_module", fail_import("convotel.demo"))

    assert main(["demo", "--serve"]) == 2

    err = capsys.readouterr().err
    assert "pip install convotel-demo`" in err
    assert "pip install 'convotel-demo[serve]'` for --serve" in err


def test_demo_dependency_missing_names_the_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib, "import_module", fail_import("openai"))

    assert main(["demo", "--live"]) == 2

    assert "needs the package 'openai', which is missing" in capsys.readouterr().err


def test_demo_module_without_the_two_functions_is_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, convotel.cli.DEMO_MODULE, ModuleType("convotel.demo.app"))

    assert main(["demo"]) == 2

    assert "lacks add_arguments(parser) or run(args)" in capsys.readouterr().err


def test_demo_arguments_and_exit_code_come_from_the_demo_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[argparse.Namespace] = []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--users", type=int, default=3)
        parser.add_argument("--otlp")

    def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    fake = SimpleNamespace(add_arguments=add_arguments, run=run)
    monkeypatch.setitem(sys.modules, convotel.cli.DEMO_MODULE, fake)

    assert main(["demo", "--users", "5", "--otlp", "http://127.0.0.1:6006/v1/traces"]) == 7

    (args,) = seen
    assert (args.command, args.users, args.otlp) == ("demo", 5, "http://127.0.0.1:6006/v1/traces")


def test_sessions_command_does_not_import_the_demo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    def no_demo(name: str, package: str | None = None) -> ModuleType:
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr(importlib, "import_module", no_demo)
    monkeypatch.chdir(str(tmp_path))

    assert main(["sessions"]) == 1  # no store here; the point is that nothing was imported

    assert "no span store here yet" in capsys.readouterr().err
