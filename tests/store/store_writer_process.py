"""A second process writing into the same store: ``python store_writer_process.py PATH N LABEL``.

Creates ``PATH.ready-LABEL`` once imported, waits for ``PATH.go`` (so writers start together),
then writes N spans through a real ``BatchSpanProcessor`` with small batches, and exits 0 once
they are all flushed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from convotel.store import SQLiteSpanExporter


def main(path: str, count: int, label: str) -> int:
    Path(f"{path}.ready-{label}").touch()
    go = Path(path + ".go")
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    exporter = SQLiteSpanExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=5, max_export_batch_size=16)
    )
    tracer = provider.get_tracer("writer-process")
    for index in range(count):
        with tracer.start_as_current_span(
            f"{label}-{index}",
            attributes={"session.id": f"{label}-session-{index % 3}", "user.id": label},
        ):
            pass
    ok = provider.force_flush(30_000)
    provider.shutdown()
    return 0 if ok and exporter.pending_spans == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
