"""Replay helpers for the Mistral cassettes (``record_mode="none"``: a missed request fails)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import vcr  # type: ignore[import-untyped]
from vcr.request import Request  # type: ignore[import-untyped]

CASSETTE_DIR = Path(__file__).resolve().parents[2] / "cassettes" / "mistralai"

MATCHED_BODY_KEYS = ("model", "agent_id", "messages", "prompt", "inputs", "tools", "stream")
"""Request fields that decide which answer is right. SDK releases add their own defaults to the
body (2.0 sends ``top_p: 1.0`` for FIM), so the rest of the body is not compared."""


def _body_fields(request: Request) -> dict[str, Any]:
    body = request.body
    if not body:
        return {}
    payload = json.loads(body.decode() if isinstance(body, bytes) else body)
    if not isinstance(payload, dict):
        return {"": payload}
    return {key: payload.get(key) for key in MATCHED_BODY_KEYS}


def _same_call(recorded: Request, sent: Request) -> None:
    recorded_fields, sent_fields = _body_fields(recorded), _body_fields(sent)
    assert recorded_fields == sent_fields, f"{recorded_fields} != {sent_fields}"


replay = vcr.VCR(
    cassette_library_dir=str(CASSETTE_DIR),
    record_mode="none",
    match_on=["method", "scheme", "host", "port", "path", "query", "mistral_call"],
    filter_headers=["authorization"],
)
"""Replays cassettes by name; a request must match method, URL and the body fields above."""
replay.register_matcher("mistral_call", _same_call)


def cassette(name: str) -> str:
    """File name of a cassette, asserting it exists so a typo cannot silently pass."""
    path = CASSETTE_DIR / f"{name}.yaml"
    assert path.is_file(), f"missing cassette {path}"
    return path.name
