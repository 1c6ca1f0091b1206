"""Keep the Mistral SDK's own OpenTelemetry span from duplicating convotel's LLM span.

Since 2.0 every ``Mistral`` client carries a ``TracingHook`` that opens a GenAI span
(``chat mistral-small-latest``...) around each HTTP request:

* 2.0 to ~2.9: whenever a real global ``TracerProvider`` is set (always on in an instrumented app);
* later releases: opt-in (``Mistral(telemetry=...)``, ``MISTRAL_SDK_TELEMETRY``,
  ``configure_telemetry(client, provider=...)``), to the global provider, a provider the user
  attaches, or a "dedicated" provider that exports to Mistral.

Inside a call that convotel traces (:func:`~convotel.call_span.inside_call` finds it), the hook's
span would be a second LLM span for the same model call in the same backend. So when the hook's
destination is the global provider or convotel's own provider, convotel tells the hook not to
trace that one request (its ``tracing_enabled`` argument is forced off). A provider the user
attached for something else (such as Mistral's dedicated telemetry export) is left alone, as are
SDK calls convotel does not trace (files, OCR...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api

from convotel.call_span import Tracing, inside_call
from convotel.endpoints import WrapperFunction

HOOK_MODULE = "mistralai.client._hooks.tracing"

_SUPPRESS_SDK_SPAN = context_api.create_key("convotel-mistralai-suppress-sdk-span")


def _reports_to_shared_provider(hook: Any, own_provider: object) -> bool:
    provider = getattr(hook, "tracer_provider", None)  # absent before 2.10: always the global one
    return (
        provider is None or provider is own_provider or provider is trace_api.get_tracer_provider()
    )


def hook_before_request_wrapper(
    own_provider: Callable[[], object],
) -> Callable[[Callable[[], Tracing]], WrapperFunction]:
    """Wrapper factory for ``TracingHook.before_request``: mark requests whose span to skip."""

    def factory(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
        def wrapper(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            try:
                suppress = inside_call(get_tracing()) is not None and _reports_to_shared_provider(
                    instance, own_provider()
                )
            except Exception:  # noqa: BLE001 - when unsure, let the SDK do what it always does
                suppress = False
            if not suppress:
                return wrapped(*args, **kwargs)
            token = context_api.attach(context_api.set_value(_SUPPRESS_SDK_SPAN, True))
            try:
                return wrapped(*args, **kwargs)
            finally:
                context_api.detach(token)

        return wrapper

    return factory


def traced_request_wrapper(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
    """Wrapper for the hook's ``get_traced_request_and_span``: no span for a marked request."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if context_api.get_value(_SUPPRESS_SDK_SPAN) and "tracing_enabled" in kwargs:
            kwargs = {**kwargs, "tracing_enabled": False}
        return wrapped(*args, **kwargs)

    return wrapper
