"""convotel: make every LLM conversation traceable as a session.

The public API of the core: the context helpers (``using_session``...), the functional setters for
explicit contexts, and the trace configuration. Adapters live in ``convotel.openai``,
``convotel.mistralai``, ``convotel.llama_index`` and ``convotel.dspy`` (separate distributions
sharing this namespace).
"""

# The packaging guide's pkgutil-style namespace idiom, in its exact form (tools such as griffe
# recognise the package as a namespace by it): the adapters' distributions add subpackages.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from convotel.config import REDACTED_VALUE, TraceConfig
from convotel.context import (
    MAX_ID_LENGTH,
    InvalidContextValueWarning,
    get_attributes_from_context,
    set_metadata,
    set_prompt_template,
    set_session,
    set_tags,
    set_user,
    using_attributes,
    using_metadata,
    using_prompt_template,
    using_session,
    using_tags,
    using_user,
)
from convotel.feedback import Feedback, InvalidFeedbackWarning, flush_feedback, record_feedback

__all__ = [
    "MAX_ID_LENGTH",
    "REDACTED_VALUE",
    "Feedback",
    "InvalidContextValueWarning",
    "InvalidFeedbackWarning",
    "TraceConfig",
    "flush_feedback",
    "get_attributes_from_context",
    "record_feedback",
    "set_metadata",
    "set_prompt_template",
    "set_session",
    "set_tags",
    "set_user",
    "using_attributes",
    "using_metadata",
    "using_prompt_template",
    "using_session",
    "using_tags",
    "using_user",
]
__version__ = "0.1.0"
