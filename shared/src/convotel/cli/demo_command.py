"""``convotel demo``: found in ``convotel.demo.app`` of the ``convotel-demo`` distribution and
imported only when asked for (the core does not ship the demo)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["DEMO_DISTRIBUTION", "DEMO_MODULE", "DemoCommand", "add_demo_command", "load_demo"]

DEMO_MODULE = "convotel.demo.app"
#: The distribution that provides :data:`DEMO_MODULE`.
DEMO_DISTRIBUTION = "convotel-demo"


@dataclass(frozen=True)
class DemoCommand:
    """The two functions ``convotel.demo.app`` provides."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def load_demo(stderr: TextIO) -> DemoCommand | None:
    """Import the demo lazily; print why and return None when it cannot be loaded."""
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in ("convotel.demo", DEMO_MODULE):
            print(
                f"convotel demo: the demo is not installed here (no module {DEMO_MODULE}). "
                f"Install it with `pip install {DEMO_DISTRIBUTION}` "
                f"(`pip install '{DEMO_DISTRIBUTION}[serve]'` for --serve), "
                "or run it from a checkout of convotel with `nox -s demo`.",
                file=stderr,
            )
        else:
            print(
                f"convotel demo: the demo needs the package {exc.name!r}, which is missing. "
                f"Reinstall {DEMO_DISTRIBUTION} (it brings the demo's dependencies) "
                "or run it with `nox -s demo`.",
                file=stderr,
            )
        return None
    add_arguments, run = getattr(module, "add_arguments", None), getattr(module, "run", None)
    if not callable(add_arguments) or not callable(run):
        print(
            f"convotel demo: {DEMO_MODULE} lacks add_arguments(parser) or run(args).",
            file=stderr,
        )
        return None
    return DemoCommand(add_arguments, run)


def add_demo_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], demo: DemoCommand | None
) -> None:
    """Add ``demo`` to ``commands`` (``ArgumentParser.add_subparsers()``), with the demo's own
    options when it is loaded."""
    demo_parser = commands.add_parser(
        "demo",
        help="run a small multi-user chatbot and record its sessions",
        add_help=demo is not None,
    )
    if demo is not None:
        demo.add_arguments(demo_parser)
