"""Replaying the hand-written OpenAI cassettes: record_mode="none", matching on the request body."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vcr
from vcr.cassette import Cassette

#: The ``instrument`` fixture: instrument with an optional TraceConfig, undone after the test.
Instrument = Callable[..., Any]

CASSETTE_DIR = Path(__file__).resolve().parents[2] / "cassettes" / "openai"

_REQUEST = ("method", "scheme", "host", "port", "path", "query")
_REPLAYER = vcr.VCR(
    cassette_library_dir=str(CASSETTE_DIR),
    record_mode="none",
    match_on=(*_REQUEST, "body"),
    decode_compressed_response=True,
)


@contextmanager
def replay(name: str, *, match_body: bool = True) -> Iterator[Cassette]:
    """Serve `cassettes/openai/<name>.yaml`; any request it does not hold raises.

    Requests match on the JSON body too, unless `match_body=False` (for calls whose body the SDK
    serializes differently from the recorded one, e.g. SDK objects echoed back as messages).
    """
    match_on = (*_REQUEST, "body") if match_body else _REQUEST
    with _REPLAYER.use_cassette(f"{name}.yaml", match_on=match_on) as cassette:
        yield cassette
