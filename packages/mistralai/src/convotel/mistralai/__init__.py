"""convotel instrumentor for the official Mistral AI SDK (``mistralai`` 2.x and 3.x).

>>> from convotel.mistralai import MistralAIInstrumentor
>>> MistralAIInstrumentor().instrument(tracer_provider=provider)  # doctest: +SKIP

Every model call of a ``mistralai.client.Mistral`` client then gets one span carrying the
session/user ids of the convotel (or OpenInference) context it runs in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from opentelemetry import trace as trace_api

from convotel.config import TraceConfig
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.mistralai import endpoints, sdk_telemetry
from convotel.mistralai.package import _instruments
from convotel.mistralai.version import __version__
from convotel.spans import Endpoint

__all__ = ["MistralAIInstrumentor", "__version__"]

_SDK = "mistralai.client"


def _sync_and_async(module: str, method: str, endpoint: Endpoint) -> list[WrapTarget]:
    """A method and its ``_async`` twin, both described by ``endpoint``."""
    return [
        WrapTarget(f"{_SDK}.{module}", method, endpoint),
        WrapTarget(f"{_SDK}.{module}", f"{method}_async", endpoint, is_async=True),
    ]


class MistralAIInstrumentor(ConvotelInstrumentor):
    """Traces chat, FIM, agents, embeddings, conversations and moderation calls of ``Mistral``."""

    instrumentation_name = "convotel.mistralai"
    instrumentation_version = __version__

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        self._tracer_provider: object = (
            kwargs.get("tracer_provider") or trace_api.get_tracer_provider()
        )
        super()._instrument(**kwargs)

    def _config(self) -> TraceConfig:
        return self.tracing.config

    def wrap_targets(self) -> Sequence[WrapTarget]:
        targets = [
            target
            for wrapped in endpoints.ENDPOINTS  # each endpoint following this instrumentor's config
            for target in _sync_and_async(
                wrapped.module, wrapped.method, wrapped.endpoint.reading(self._config)
            )
        ]
        targets += [
            WrapTarget(
                sdk_telemetry.HOOK_MODULE,
                "TracingHook.before_request",
                wrapper=sdk_telemetry.hook_before_request_wrapper(lambda: self._tracer_provider),
            ),
            WrapTarget(
                sdk_telemetry.HOOK_MODULE,
                "get_traced_request_and_span",
                wrapper=sdk_telemetry.traced_request_wrapper,
            ),
        ]
        return targets
