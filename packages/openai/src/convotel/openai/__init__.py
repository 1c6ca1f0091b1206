"""OpenTelemetry instrumentation for the official OpenAI Python SDK, with convotel sessions.

``OpenAIInstrumentor().instrument()`` traces chat completions (``create``, ``parse``, streams and
the ``.stream(...)`` helpers), the Responses API, embeddings and legacy completions, for the
OpenAI and Azure OpenAI clients, sync and async, including the ``.with_raw_response`` and
``.with_streaming_response`` call paths. Other API calls (models, files...) are not traced.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from convotel.config import TraceConfig
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.openai.endpoints import (
    ChatCompletions,
    Completions,
    Embeddings,
    OpenAIEndpoint,
    ParsedChatCompletions,
    Responses,
)
from convotel.openai.package import INSTRUMENTATION_NAME, _instruments
from convotel.openai.retries import record_retries
from convotel.openai.version import __version__

__all__ = ["OpenAIInstrumentor", "__version__"]


class OpenAIInstrumentor(ConvotelInstrumentor):
    """Traces the OpenAI SDK's model calls; ``instrument(tracer_provider=..., config=...)``."""

    instrumentation_name = INSTRUMENTATION_NAME
    instrumentation_version = __version__

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _config(self) -> TraceConfig:
        return self.tracing.config

    def wrap_targets(self) -> Sequence[WrapTarget]:
        chat = ChatCompletions(self._config)
        responses = Responses(self._config)
        sync_methods: tuple[tuple[str, str, OpenAIEndpoint], ...] = (
            ("openai.resources.chat.completions", "Completions.create", chat),
            (
                "openai.resources.chat.completions",
                "Completions.parse",
                ParsedChatCompletions(self._config),
            ),
            ("openai.resources.responses", "Responses.create", responses),
            ("openai.resources.responses", "Responses.parse", responses),
            ("openai.resources.embeddings", "Embeddings.create", Embeddings(self._config)),
            ("openai.resources.completions", "Completions.create", Completions(self._config)),
        )
        return [
            *(WrapTarget(module, name, endpoint) for module, name, endpoint in sync_methods),
            *(
                WrapTarget(module, f"Async{name}", endpoint, is_async=True)
                for module, name, endpoint in sync_methods
            ),
            WrapTarget(
                "openai._base_client", "SyncAPIClient._sleep_for_retry", wrapper=record_retries
            ),
            WrapTarget(
                "openai._base_client", "AsyncAPIClient._sleep_for_retry", wrapper=record_retries
            ),
        ]
