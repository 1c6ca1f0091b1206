"""convotel instrumentation for LlamaIndex (``llama-index-core``).

``LlamaIndexInstrumentor().instrument()`` registers a span handler and an event handler on
LlamaIndex's root instrumentation dispatcher; every instrumented LlamaIndex call then becomes an
OpenInference span carrying the session and user ids of the convotel context it ran in. The
stream methods of LlamaIndex's LLM classes are also wrapped, so that their lazy streams step
under the context of the call that returned them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.llama_index.package import _instruments
from convotel.llama_index.version import __version__

__all__ = ["LlamaIndexInstrumentor", "__version__"]


class LlamaIndexInstrumentor(ConvotelInstrumentor):
    """Traces LlamaIndex through its instrumentation dispatcher; wraps only the LLM classes'
    stream methods (a span handler cannot replace the stream a call returns)."""

    instrumentation_name = "convotel.llama_index"
    instrumentation_version = __version__

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def wrap_targets(self) -> Sequence[WrapTarget]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        from llama_index_instrumentation import get_dispatcher

        from convotel.llama_index.handlers import (
            CallTracker,
            ConvotelEventHandler,
            ConvotelSpanHandler,
        )
        from convotel.llama_index.streaming import StreamMethodPatch

        super()._instrument(**kwargs)
        dispatcher = get_dispatcher()
        tracker = CallTracker(self._get_tracing)
        dispatcher.add_span_handler(ConvotelSpanHandler(tracker))
        dispatcher.add_event_handler(ConvotelEventHandler(tracker))
        self._stream_methods = StreamMethodPatch()
        self._stream_methods.install()

    def _uninstrument(self, **kwargs: Any) -> None:
        from llama_index_instrumentation import get_dispatcher

        from convotel.llama_index.handlers import ConvotelEventHandler, ConvotelSpanHandler

        dispatcher = get_dispatcher()
        dispatcher.span_handlers[:] = [
            handler
            for handler in dispatcher.span_handlers
            if not isinstance(handler, ConvotelSpanHandler)
        ]
        dispatcher.event_handlers[:] = [
            handler
            for handler in dispatcher.event_handlers
            if not isinstance(handler, ConvotelEventHandler)
        ]
        self._stream_methods.remove()
        super()._uninstrument(**kwargs)
