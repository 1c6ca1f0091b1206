"""Trace configuration: what convotel records, hides or truncates.

Every option can be given to the constructor or through the environment; constructor arguments
win. The environment variables are the ones OpenInference uses (``OPENINFERENCE_HIDE_INPUTS``...)
so existing deployments keep working, plus a few ``CONVOTEL_*`` ones for convotel's own options.
Hidden values are dropped or replaced by :data:`REDACTED_VALUE`; the decision is made once per
attribute name and cached, so masking stays cheap on the hot path.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from openinference.semconv.trace import (
    DocumentAttributes,
    EmbeddingAttributes,
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    RerankerAttributes,
    SpanAttributes,
)

__all__ = ["REDACTED_VALUE", "TraceConfig"]

logger = logging.getLogger(__name__)

REDACTED_VALUE = "__REDACTED__"

_INPUT_MESSAGES = SpanAttributes.LLM_INPUT_MESSAGES
_OUTPUT_MESSAGES = SpanAttributes.LLM_OUTPUT_MESSAGES
_TEXT_SUFFIXES = (
    f".{MessageAttributes.MESSAGE_CONTENT}",
    f".{MessageContentAttributes.MESSAGE_CONTENT_TEXT}",
)
_IMAGE_URL_SUFFIX = f".{ImageAttributes.IMAGE_URL}"
#: Inputs ``hide_inputs`` redacts besides ``input.value`` (prompts, template variables, query).
_INPUT_TEXTS = (
    SpanAttributes.LLM_PROMPTS,
    SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES,
    RerankerAttributes.RERANKER_QUERY,
)
_RERANKER_INPUT_DOCUMENTS = RerankerAttributes.RERANKER_INPUT_DOCUMENTS
_RERANKER_OUTPUT_DOCUMENTS = RerankerAttributes.RERANKER_OUTPUT_DOCUMENTS
#: A retrieved document's leaves ``hide_retrieval_documents`` (and ``hide_outputs``) redact.
_DOCUMENT_TEXTS = (DocumentAttributes.DOCUMENT_CONTENT, DocumentAttributes.DOCUMENT_METADATA)
# Span-level images (``input.images.*`` / ``output.images.*``; named in conventions after 0.1.33).
_INPUT_IMAGES: str = getattr(SpanAttributes, "INPUT_IMAGES", "input.images")
_OUTPUT_IMAGES: str = getattr(SpanAttributes, "OUTPUT_IMAGES", "output.images")
_MAX_CACHED_KEYS = 4096


class _Decision(enum.Enum):
    KEEP = 0
    DROP = 1
    REDACT = 2
    CHECK_IMAGE = 3


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    logger.warning("convotel: ignoring %s=%r (expected true or false)", name, raw)
    return None


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        logger.warning("convotel: ignoring %s=%r (expected a whole number)", name, raw)
        return None
    return value if value > 0 else None


def _option(env: str, default: Any, kind: str = "flag") -> Any:
    return field(default=None, metadata={"env": env, "default": default, "kind": kind})


@dataclass(frozen=True)
class TraceConfig:
    """What to hide or truncate. ``None`` means: take the environment variable, else the default.

    Options (environment variable in brackets):

    * ``hide_inputs`` [OPENINFERENCE_HIDE_INPUTS]: redact ``input.value``, prompts
      (``llm.prompts``), prompt-template variables, embedding texts and a reranker's query; drop
      input messages, input images (``input.images.*``), tool definitions and a reranker's input
      documents. Implies ``hide_llm_tools``, ``hide_prompts`` and ``hide_embeddings_text``.
    * ``hide_outputs`` [OPENINFERENCE_HIDE_OUTPUTS]: redact ``output.value``, completion choices
      (``llm.choices``) and retrieved documents' contents and metadata; drop output messages,
      output images (``output.images.*``) and a reranker's output documents. Implies
      ``hide_choices`` and ``hide_retrieval_documents``.
    * ``hide_input_messages`` / ``hide_output_messages`` [OPENINFERENCE_HIDE_INPUT_MESSAGES /
      OPENINFERENCE_HIDE_OUTPUT_MESSAGES]: drop ``llm.input_messages.*`` /
      ``llm.output_messages.*``.
    * ``hide_input_text`` / ``hide_output_text`` [OPENINFERENCE_HIDE_INPUT_TEXT /
      OPENINFERENCE_HIDE_OUTPUT_TEXT]: redact the text content of input / output messages.
    * ``hide_input_images`` [OPENINFERENCE_HIDE_INPUT_IMAGES]: drop image URLs of input messages
      and span-level input images (``input.images.*``).
    * ``hide_embeddings_vectors`` [OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS], or its older name
      ``hide_embedding_vectors`` [OPENINFERENCE_HIDE_EMBEDDING_VECTORS]: redact embedding
      vectors (either one on hides them).
    * ``hide_embeddings_text`` [OPENINFERENCE_HIDE_EMBEDDINGS_TEXT]: redact the texts embedded
      (``embedding.embeddings.*.embedding.text``).
    * ``hide_llm_tools`` [OPENINFERENCE_HIDE_LLM_TOOLS]: drop the tool definitions offered to the
      model (``llm.tools.*``).
    * ``hide_prompts`` [OPENINFERENCE_HIDE_PROMPTS]: redact the prompts of completion-style calls
      (``llm.prompts``: legacy completions, FIM); ``input.value`` stays (``hide_inputs``).
    * ``hide_choices`` [OPENINFERENCE_HIDE_CHOICES]: redact the choices of completion-style calls
      (``llm.choices.*``); ``output.value`` stays (``hide_outputs``).
    * ``hide_retrieval_documents`` [OPENINFERENCE_HIDE_RETRIEVAL_DOCUMENTS]: redact retrieved
      documents' contents and metadata (``retrieval.documents.*.document.content`` /
      ``.document.metadata``); ids and scores stay.
    * ``hide_llm_invocation_parameters`` [OPENINFERENCE_HIDE_LLM_INVOCATION_PARAMETERS].
    * ``base64_image_max_length`` [OPENINFERENCE_BASE64_IMAGE_MAX_LENGTH] (default 32,000): longer
      ``data:`` image URLs are redacted.
    * ``max_value_length`` [CONVOTEL_MAX_VALUE_LENGTH] (default: no limit): longer string
      attribute values (and strings in lists, image URLs, values recorded as JSON) are truncated
      to this many characters.
    * ``request_stream_usage`` [CONVOTEL_REQUEST_STREAM_USAGE] (default true): providers that
      need it (OpenAI) are asked for token usage on streams the application did not ask it for,
      so streamed turns count their tokens; the extra usage-only chunk is hidden from the
      application. ``False`` sends every request unchanged.
    * ``enable_genai_semconv`` [OPENINFERENCE_ENABLE_GENAI_SEMCONV] (default false): also write the
      OpenTelemetry GenAI names (``gen_ai.conversation.id``, ``gen_ai.usage.input_tokens``...).
    * ``provider_sessions`` [CONVOTEL_PROVIDER_SESSIONS] (default true): when no session is in
      force, a call's ``session.id`` is the provider's conversation (OpenAI ``conversation=`` and
      ``previous_response_id`` chains, Mistral conversations; see
      :mod:`convotel.provider_sessions`). ``False`` leaves such calls without a session.
    * ``provider_user_ids`` [CONVOTEL_PROVIDER_USER_IDS] (default false): when no user is in
      force, the id the application gave the provider for abuse monitoring (OpenAI's
      ``safety_identifier``, else ``user``) becomes ``user.id``. Off by default: such ids are
      often hashes made for the provider, not the application's user ids.
    * ``record_cost`` [CONVOTEL_RECORD_COST] (default true): an LLM span records its cost in USD
      (``llm.cost.*``) priced by ``genai-prices``' bundled data (see :mod:`convotel.cost`); an
      unknown model or provider gets no cost. ``False`` records none.
    * ``user_id_key`` [CONVOTEL_USER_ID_KEY] (default: none): record and propagate user ids as
      keyed pseudonyms (:mod:`convotel.pseudonyms`); given here, it becomes the process's key when
      the instrumentor is instrumented.
    """

    hide_inputs: bool = _option("OPENINFERENCE_HIDE_INPUTS", False)
    hide_outputs: bool = _option("OPENINFERENCE_HIDE_OUTPUTS", False)
    hide_input_messages: bool = _option("OPENINFERENCE_HIDE_INPUT_MESSAGES", False)
    hide_output_messages: bool = _option("OPENINFERENCE_HIDE_OUTPUT_MESSAGES", False)
    hide_input_text: bool = _option("OPENINFERENCE_HIDE_INPUT_TEXT", False)
    hide_output_text: bool = _option("OPENINFERENCE_HIDE_OUTPUT_TEXT", False)
    hide_input_images: bool = _option("OPENINFERENCE_HIDE_INPUT_IMAGES", False)
    hide_embedding_vectors: bool = _option("OPENINFERENCE_HIDE_EMBEDDING_VECTORS", False)
    hide_embeddings_vectors: bool = _option("OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS", False)
    hide_embeddings_text: bool = _option("OPENINFERENCE_HIDE_EMBEDDINGS_TEXT", False)
    hide_llm_tools: bool = _option("OPENINFERENCE_HIDE_LLM_TOOLS", False)
    hide_prompts: bool = _option("OPENINFERENCE_HIDE_PROMPTS", False)
    hide_choices: bool = _option("OPENINFERENCE_HIDE_CHOICES", False)
    hide_retrieval_documents: bool = _option("OPENINFERENCE_HIDE_RETRIEVAL_DOCUMENTS", False)
    hide_llm_invocation_parameters: bool = _option(
        "OPENINFERENCE_HIDE_LLM_INVOCATION_PARAMETERS", False
    )
    base64_image_max_length: int = _option("OPENINFERENCE_BASE64_IMAGE_MAX_LENGTH", 32_000, "int")
    max_value_length: int | None = _option("CONVOTEL_MAX_VALUE_LENGTH", None, "int")
    request_stream_usage: bool = _option("CONVOTEL_REQUEST_STREAM_USAGE", True)
    enable_genai_semconv: bool = _option("OPENINFERENCE_ENABLE_GENAI_SEMCONV", False)
    provider_sessions: bool = _option("CONVOTEL_PROVIDER_SESSIONS", True)
    provider_user_ids: bool = _option("CONVOTEL_PROVIDER_USER_IDS", False)
    record_cost: bool = _option("CONVOTEL_RECORD_COST", True)
    #: The key user ids are pseudonymised with (see :mod:`convotel.pseudonyms`); given here, the
    #: instrumentor makes it the process's key when instrumenting (``CONVOTEL_USER_ID_KEY`` is
    #: read by that module itself). Never shown in the config's ``repr``.
    user_id_key: str | bytes | None = field(default=None, repr=False, compare=False)
    _decisions: dict[str, _Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            if "env" not in option.metadata or getattr(self, option.name) is not None:
                continue
            read = _env_int if option.metadata["kind"] == "int" else _env_flag
            value = read(option.metadata["env"])
            chosen = option.metadata["default"] if value is None else value
            object.__setattr__(self, option.name, chosen)

    @property
    def hides_anything(self) -> bool:
        """True when any hide option is on (adapters may skip building what would be hidden)."""
        return any(
            getattr(self, option.name) is True
            for option in dataclasses.fields(self)
            if option.name.startswith("hide_")
        )

    def mask(self, key: str, value: Any) -> Any:
        """Return ``value`` as it may be recorded under ``key``: itself (truncated to
        ``max_value_length``), redacted, or ``None``."""
        decision = self._decision(key)
        if decision is _Decision.KEEP:
            return value if self.max_value_length is None else self._truncated(value)
        if decision is _Decision.DROP:
            return None
        if decision is _Decision.REDACT:
            return REDACTED_VALUE
        if (
            isinstance(value, str)
            and value.startswith("data:")
            and len(value) > self.base64_image_max_length
        ):
            return REDACTED_VALUE
        return value if self.max_value_length is None else self._truncated(value)

    def keeps_unchanged(self, key: str) -> bool:
        """Whether every value under ``key`` is recorded as it is (not hidden, redacted or
        truncated): what a span's fast path may skip :meth:`mask` for."""
        return self.max_value_length is None and self._decision(key) is _Decision.KEEP

    def _decision(self, key: str) -> _Decision:
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(key)
            if len(self._decisions) >= _MAX_CACHED_KEYS:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _truncated(self, value: Any) -> Any:
        limit = self.max_value_length
        if isinstance(value, str):
            return value[:limit]
        if isinstance(value, (list, tuple)) and any(isinstance(item, str) for item in value):
            return [item[:limit] if isinstance(item, str) else item for item in value]
        return value

    def _decide(self, key: str) -> _Decision:
        in_inputs = key.startswith(_INPUT_MESSAGES)
        in_outputs = key.startswith(_OUTPUT_MESSAGES)
        if key == SpanAttributes.LLM_INVOCATION_PARAMETERS:
            return _Decision.DROP if self.hide_llm_invocation_parameters else _Decision.KEEP
        if key in (SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE):
            if self.hide_inputs:
                return _Decision.REDACT if key == SpanAttributes.INPUT_VALUE else _Decision.DROP
            return _Decision.KEEP
        if key in (SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE):
            if self.hide_outputs:
                return _Decision.REDACT if key == SpanAttributes.OUTPUT_VALUE else _Decision.DROP
            return _Decision.KEEP
        if self.hide_inputs:
            if key.startswith((SpanAttributes.LLM_TOOLS, _RERANKER_INPUT_DOCUMENTS)):
                return _Decision.DROP
            if key.startswith(_INPUT_TEXTS):
                return _Decision.REDACT
        if self.hide_outputs:
            if key.startswith((_RERANKER_OUTPUT_DOCUMENTS, _OUTPUT_IMAGES)):
                return _Decision.DROP
            if key.startswith(SpanAttributes.LLM_CHOICES):
                return _Decision.REDACT
        if self.hide_llm_tools and key.startswith(SpanAttributes.LLM_TOOLS):
            return _Decision.DROP
        if self.hide_prompts and key.startswith(SpanAttributes.LLM_PROMPTS):
            return _Decision.REDACT
        if self.hide_choices and key.startswith(SpanAttributes.LLM_CHOICES):
            return _Decision.REDACT
        if (self.hide_inputs or self.hide_input_images) and key.startswith(_INPUT_IMAGES):
            return _Decision.DROP
        if in_inputs and (self.hide_inputs or self.hide_input_messages):
            return _Decision.DROP
        if in_outputs and (self.hide_outputs or self.hide_output_messages):
            return _Decision.DROP
        if in_inputs and self.hide_input_text and key.endswith(_TEXT_SUFFIXES):
            return _Decision.REDACT
        if in_outputs and self.hide_output_text and key.endswith(_TEXT_SUFFIXES):
            return _Decision.REDACT
        if key.endswith(_IMAGE_URL_SUFFIX):
            if in_inputs and self.hide_input_images:
                return _Decision.DROP
            return _Decision.CHECK_IMAGE
        if key.startswith(SpanAttributes.EMBEDDING_EMBEDDINGS):
            hide_vectors = self.hide_embedding_vectors or self.hide_embeddings_vectors
            if hide_vectors and key.endswith(EmbeddingAttributes.EMBEDDING_VECTOR):
                return _Decision.REDACT
            hide_texts = self.hide_inputs or self.hide_embeddings_text
            if hide_texts and key.endswith(EmbeddingAttributes.EMBEDDING_TEXT):
                return _Decision.REDACT
        if (
            (self.hide_outputs or self.hide_retrieval_documents)
            and key.startswith(SpanAttributes.RETRIEVAL_DOCUMENTS)
            and key.endswith(_DOCUMENT_TEXTS)
        ):
            return _Decision.REDACT
        return _Decision.KEEP
