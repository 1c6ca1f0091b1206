"""convotel instrumentation for DSPy: session-aware spans for modules, LMs, tools and retrievers.

``DSPyInstrumentor().instrument(tracer_provider=...)`` traces every DSPy program in the process:

=======================================  ===================================================
wrapped                                  span
=======================================  ===================================================
``Module.__call__`` / ``Module.acall``   CHAIN ``<Module>.forward`` (AGENT for ReAct & co.)
``BaseLM.__call__`` / ``BaseLM.acall``   LLM ``LM.__call__`` (model, messages, tokens)
``Tool.__call__`` / ``Tool.acall``       TOOL ``<tool name>``
``Embedder.__call__`` / ``acall``        EMBEDDING ``Embedder.__call__``
``Retrieve`` / ``Embeddings.__call__``   RETRIEVER ``<Retriever>.forward``
``Evaluate.__call__``                    CHAIN ``Evaluate``
``ParallelExecutor.execute``             no span: worker threads get the caller's context
=======================================  ===================================================

Token counts come from DSPy's own record of each call (``finalize`` on DSPy >= 3.4, the LM
history before). LLM spans are *framework* spans: when a provider instrumentor (convotel-openai)
records the same model call below, the DSPy span keeps the messages, drops its token counts and
becomes CHAIN, so one model call is one LLM span.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Sequence

from convotel.dspy.calls import (
    EMBEDDER_CALL,
    EVALUATE_CALL,
    LM_CALL,
    MODULE_CALL,
    RETRIEVER_CALL,
    TOOL_CALL,
    finalize_observer,
    history_observer,
)
from convotel.dspy.package import _instruments
from convotel.dspy.thread_context import context_propagating_wrapper
from convotel.dspy.version import __version__
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget

__all__ = ["DSPyInstrumentor", "__version__"]


def _has_execution_module() -> bool:
    """DSPy >= 3.4 sends every LM call through ``dspy.clients.execution.finalize``."""
    try:
        return importlib.util.find_spec("dspy.clients.execution") is not None
    except ImportError:
        return False


class DSPyInstrumentor(ConvotelInstrumentor):
    """Traces DSPy programs with the convotel session, user and metadata from the context."""

    instrumentation_name = "convotel.dspy"
    instrumentation_version = __version__

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def wrap_targets(self) -> Sequence[WrapTarget]:
        usage_observer = (
            WrapTarget("dspy.clients.execution", "finalize", wrapper=finalize_observer)
            if _has_execution_module()
            else WrapTarget(
                "dspy.clients.base_lm", "BaseLM.update_history", wrapper=history_observer
            )
        )
        module, lm, tool, embedder, retrieve, embeddings = (
            "dspy.primitives.module",
            "dspy.clients.base_lm",
            "dspy.adapters.types.tool",
            "dspy.clients.embedding",
            "dspy.retrievers.retrieve",
            "dspy.retrievers.embeddings",
        )
        return (
            WrapTarget(module, "Module.__call__", endpoint=MODULE_CALL),
            WrapTarget(module, "Module.acall", endpoint=MODULE_CALL, is_async=True),
            WrapTarget(lm, "BaseLM.__call__", endpoint=LM_CALL),
            WrapTarget(lm, "BaseLM.acall", endpoint=LM_CALL, is_async=True),
            WrapTarget(tool, "Tool.__call__", endpoint=TOOL_CALL),
            WrapTarget(tool, "Tool.acall", endpoint=TOOL_CALL, is_async=True),
            WrapTarget(embedder, "Embedder.__call__", endpoint=EMBEDDER_CALL),
            WrapTarget(embedder, "Embedder.acall", endpoint=EMBEDDER_CALL, is_async=True),
            WrapTarget(retrieve, "Retrieve.__call__", endpoint=RETRIEVER_CALL),
            WrapTarget(embeddings, "Embeddings.__call__", endpoint=RETRIEVER_CALL),
            WrapTarget("dspy.evaluate.evaluate", "Evaluate.__call__", endpoint=EVALUATE_CALL),
            WrapTarget(
                "dspy.utils.parallelizer",
                "ParallelExecutor.execute",
                wrapper=context_propagating_wrapper,
            ),
            usage_observer,
        )
