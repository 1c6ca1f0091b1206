"""Write `cassettes/openai/*.yaml` from the hand-written wire responses in `openai_wire.py`.

Each recipe's SDK call runs once against an in-process `httpx2.MockTransport` that answers with the
recipe's responses, while vcrpy records the exchange; the request bodies in the cassettes are
therefore exactly what the SDK sends. No network is used. Run from the repository root:

    python tests/openai/generate_openai_cassettes.py
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import httpx2
import vcr
from vcr.request import Request

sys.path.insert(0, str(Path(__file__).parent))

from openai_wire import RECIPES, Recipe, make_client

CASSETTE_DIR = Path(__file__).resolve().parents[2] / "cassettes" / "openai"
KEPT_REQUEST_HEADERS = {"content-type", "accept"}


def _strip_request_headers(request: Request) -> Request:
    """Keep cassettes free of keys and SDK/platform versions."""
    for name in list(request.headers):
        if name.lower() not in KEPT_REQUEST_HEADERS:
            del request.headers[name]
    return request


def record(recipe: Recipe) -> Path:
    pending = deque(recipe.responses)

    def answer(request: httpx2.Request) -> httpx2.Response:
        wire = pending.popleft()
        return httpx2.Response(wire.status, headers=dict(wire.headers), content=wire.body)

    path = CASSETTE_DIR / f"{recipe.name}.yaml"
    path.unlink(missing_ok=True)
    recorder = vcr.VCR(
        record_mode="all",
        before_record_request=_strip_request_headers,
        decode_compressed_response=True,
    )
    with recorder.use_cassette(str(path)):
        client = make_client(
            recipe, http_client=httpx2.Client(transport=httpx2.MockTransport(answer))
        )
        result = recipe.call(client)
    if pending:
        raise RuntimeError(f"{recipe.name}: {len(pending)} response(s) were never requested")
    if result != recipe.expected:
        raise RuntimeError(f"{recipe.name}: SDK returned {result!r}, expected {recipe.expected!r}")
    return path


def main() -> None:
    CASSETTE_DIR.mkdir(parents=True, exist_ok=True)
    for recipe in RECIPES:
        print(f"wrote {record(recipe).relative_to(Path.cwd())}")


if __name__ == "__main__":
    main()
