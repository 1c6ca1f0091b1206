"""OpenTelemetry instrumentation for the official OpenAI Python SDK, with convotel sessions.

``OpenAIInstrumentor().instrument()`` traces chat completions (``create``, ``parse``, streams and
the ``.stream(...)`` helpers), the Responses API, embeddings and legacy completions, for the
OpenAI and Azure OpenAI clients, sync and async, including the ``.with_raw_response`` and
``.with_streaming_response`` call paths. Other API calls (models, files...) are not traced.

Streamed chat and legacy completions count their tokens by default: convotel asks for the usage
chunk the application did not ask for and hides it (``TraceConfig(request_stream_usage=False)``
or ``CONVOTEL_REQUEST_STREAM_USAGE=false`` sends requests unchanged); see
:mod:`convotel.openai.stream_usage` for servers that reject ``stream_options``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from convotel.config import TraceConfig
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.openai.endpoints import (
    ENDPOINTS,
    EndpointSpec,
    OpenAIEndpoint,
    UsageRequestingEndpoint,
)
from convotel.openai.package import INSTRUMENTATION_NAME, _instruments
from convotel.openai.retries import record_retries
from convotel.openai.stream_usage import async_usage_wrapper, sync_usage_wrapper
from convotel.openai.version import __version__

__all__ = ["OpenAIInstrumentor", "__version__"]

#: What the endpoints read while not instrumented: requests are sent as the application wrote them.
_REQUESTS_UNCHANGED = TraceConfig(request_stream_usage=False)


class OpenAIInstrumentor(ConvotelInstrumentor):
    """Traces the OpenAI SDK's model calls; ``instrument(tracer_provider=..., config=...)``."""

    instrumentation_name = INSTRUMENTATION_NAME
    instrumentation_version = __version__

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _config(self) -> TraceConfig:
        if not self.is_instrumented_by_opentelemetry:  # wrappers kept alive by cached methods
            return _REQUESTS_UNCHANGED
        return self.tracing.config

    def wrap_targets(self) -> Sequence[WrapTarget]:
        built: dict[EndpointSpec, OpenAIEndpoint] = {}  # one endpoint per spec (shared state)
        targets: list[WrapTarget] = []
        for module, name, spec in ENDPOINTS:
            endpoint = built.get(spec)
            if endpoint is None:
                endpoint = built[spec] = spec.endpoint(self._config)
            if isinstance(endpoint, UsageRequestingEndpoint):  # with the rejection fallback
                targets += (
                    WrapTarget(module, name, wrapper=sync_usage_wrapper(endpoint)),
                    WrapTarget(module, f"Async{name}", wrapper=async_usage_wrapper(endpoint)),
                )
            else:
                targets += (
                    WrapTarget(module, name, endpoint),
                    WrapTarget(module, f"Async{name}", endpoint, is_async=True),
                )
        return [
            *targets,
            WrapTarget(
                "openai._base_client", "SyncAPIClient._sleep_for_retry", wrapper=record_retries
            ),
            WrapTarget(
                "openai._base_client", "AsyncAPIClient._sleep_for_retry", wrapper=record_retries
            ),
        ]
