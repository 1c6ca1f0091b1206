"""``convotel export --endpoint URL``: the store's spans sent over OTLP/HTTP (see
:mod:`convotel.store.export`)."""

from __future__ import annotations

import argparse
from typing import TextIO

from convotel.cli.sessions_command import _positive_int, parse_time
from convotel.store import STORE_ENV_VAR, SpanStore, StoreError
from convotel.store.export import (
    DEFAULT_BATCH_SIZE,
    ExportFailedError,
    ExportFilters,
    export_spans,
    progress_path,
)

__all__ = ["add_export_command", "run_export"]

_OTLP_MISSING = (
    "convotel export needs OpenTelemetry's OTLP/HTTP exporter: "
    "pip install 'convotel[otlp]' (or opentelemetry-exporter-otlp-proto-http)"
)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_export_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export`` to ``commands``."""
    export = commands.add_parser(
        "export",
        help="send the store's spans to an OTLP/HTTP endpoint (Phoenix, a Collector)",
        description=(
            "Send the spans of the span store to an OTLP/HTTP endpoint with their original ids, "
            "times, attributes and resource. Whole traces are sent; progress is kept beside "
            "the store, so running the same command again resumes and never sends a span twice."
        ),
    )
    export.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="the OTLP/HTTP traces URL, e.g. http://localhost:6006/v1/traces",
    )
    export.add_argument(
        "--store",
        metavar="PATH",
        help=f"span store file (default: ${STORE_ENV_VAR}, else .convotel/spans.sqlite3)",
    )
    export.add_argument("--session", metavar="ID", help="only the traces of this session.id")
    export.add_argument("--user", metavar="USER", help="only the traces of this user.id")
    export.add_argument(
        "--since",
        metavar="WHEN",
        type=parse_time,
        help="only traces active at or after WHEN (ISO time, or 30m, 2h, 1d ago)",
    )
    export.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"spans per request (default {DEFAULT_BATCH_SIZE})",
    )
    export.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=10.0,
        help="how long one request may take, retries included (default 10)",
    )
    export.add_argument(
        "--restart",
        action="store_true",
        help="send everything again, forgetting what this endpoint already got",
    )


def run_export(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Send the selected spans; returns the exit status (1: the endpoint refused, 2: usage)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        print(f"convotel: {_OTLP_MISSING}", file=stderr)
        return 2
    filters = ExportFilters(session_id=args.session, user_id=args.user, since=args.since)
    exporter = OTLPSpanExporter(endpoint=args.endpoint, timeout=args.timeout)

    def report(sent: int, total: int) -> None:
        print(f"convotel: exported {sent:,} of {total:,} spans", file=stderr, flush=True)

    try:
        with SpanStore(args.store) as store:
            sent = export_spans(
                store,
                exporter,
                endpoint=args.endpoint,
                filters=filters,
                batch_size=args.batch_size,
                restart=args.restart,
                progress=report,
            )
            where = progress_path(store)
    except StoreError as exc:
        print(f"convotel: {exc}", file=stderr)
        return 2
    except ExportFailedError as exc:
        print(f"convotel: export failed: {exc}", file=stderr)
        return 1
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if sent:
        print(
            f"Exported {sent:,} spans to {args.endpoint} (progress kept in {where}).", file=stdout
        )
    else:
        print(f"Nothing new to export to {args.endpoint}.", file=stdout)
    return 0
