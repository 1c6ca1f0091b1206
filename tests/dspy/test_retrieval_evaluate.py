"""Embedders as EMBEDDING spans, retrievers as RETRIEVER spans, Evaluate runs as one tree."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import dspy
import numpy as np
import pytest
import vcr
from dspy_spans import by_name, one, parent_of
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import using_session

KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
CORPUS = ["Paris is in France.", "Rome is in Italy.", "Oslo is in Norway."]


def bag_of_letters(texts: list[str]) -> np.ndarray:
    """A deterministic toy embedding: letter counts of a few letters."""
    return np.array([[t.lower().count(c) + 0.1 for c in "pronyi"] for t in texts], dtype=float)


def test_embedder_is_an_embedding_span_with_texts_and_vectors(
    spans: InMemorySpanExporter,
) -> None:
    embedder = dspy.Embedder(bag_of_letters, caching=False)

    with using_session("s-embed"):
        vectors = embedder(["pony", "iron"])

    assert vectors.shape == (2, 6)
    span = one(spans.get_finished_spans(), "Embedder.__call__")
    assert span.attributes[KIND] == OpenInferenceSpanKindValues.EMBEDDING.value
    assert span.attributes[SpanAttributes.SESSION_ID] == "s-embed"
    assert span.attributes[SpanAttributes.EMBEDDING_MODEL_NAME] == "bag_of_letters"
    assert span.attributes["embedding.embeddings.0.embedding.text"] == "pony"
    assert span.attributes["embedding.embeddings.1.embedding.text"] == "iron"
    assert list(span.attributes["embedding.embeddings.0.embedding.vector"]) == pytest.approx(
        vectors[0].tolist()
    )


def test_hosted_embedder_through_litellm_records_model_and_provider(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    embedder = dspy.Embedder("openai/text-embedding-3-small", caching=False, api_key="sk-test")

    with cassettes.use_cassette("litellm_embeddings.yaml") as cassette:
        vectors = embedder(["hello", "world"])

    assert cassette.all_played
    assert vectors.shape == (2, 3)
    span = one(spans.get_finished_spans(), "Embedder.__call__")
    assert span.attributes[SpanAttributes.EMBEDDING_MODEL_NAME] == "openai/text-embedding-3-small"
    assert span.attributes[SpanAttributes.LLM_PROVIDER] == "openai"
    assert span.status.status_code is StatusCode.OK


def test_failing_embedder_reraises_the_same_exception(spans: InMemorySpanExporter) -> None:
    failure = OSError("model file missing")

    def broken(texts: list[str]) -> Any:
        raise failure

    with pytest.raises(OSError, match="model file missing") as raised:
        dspy.Embedder(broken, caching=False)("text")

    assert raised.value is failure
    span = one(spans.get_finished_spans(), "Embedder.__call__")
    assert span.status.status_code is StatusCode.ERROR


def test_embeddings_retriever_is_a_retriever_span_with_ranked_documents(
    spans: InMemorySpanExporter,
) -> None:
    retriever = dspy.retrievers.Embeddings(
        corpus=CORPUS, embedder=dspy.Embedder(bag_of_letters, caching=False), k=2
    )
    spans.clear()  # the corpus embedding at construction is not part of the query

    with using_session("s-retrieve"):
        result = retriever("Paris France")

    assert result.passages[0] == "Paris is in France."
    finished = spans.get_finished_spans()
    # The query is embedded in DSPy's shared batching thread: no span there (it has no session).
    assert [s.name for s in finished] == ["Embeddings.forward"]
    span = finished[0]
    assert span.attributes[KIND] == OpenInferenceSpanKindValues.RETRIEVER.value
    assert span.attributes[SpanAttributes.SESSION_ID] == "s-retrieve"
    assert span.attributes[SpanAttributes.INPUT_VALUE] == "Paris France"
    assert span.attributes["retrieval.documents.0.document.content"] == "Paris is in France."
    assert span.attributes["retrieval.documents.0.document.id"] == "0"
    assert "retrieval.documents.1.document.content" in span.attributes
    assert "retrieval.documents.2.document.content" not in span.attributes


def test_retrieve_module_records_passages_from_the_configured_rm(
    spans: InMemorySpanExporter,
) -> None:
    def rm(query: str, k: int, **kwargs: Any) -> list[SimpleNamespace]:
        return [SimpleNamespace(long_text=f"{query} passage {i}") for i in range(k)]

    with dspy.context(rm=rm), using_session("s-rm"):
        result = dspy.Retrieve(k=2)("tides")

    assert result.passages == ["tides passage 0", "tides passage 1"]
    span = one(spans.get_finished_spans(), "Retrieve.forward")
    assert span.attributes[KIND] == OpenInferenceSpanKindValues.RETRIEVER.value
    assert span.attributes["retrieval.documents.1.document.content"] == "tides passage 1"
    assert span.attributes[SpanAttributes.SESSION_ID] == "s-rm"


def exact_match(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return bool(prediction.answer == f"answer to {example.question}")


def test_evaluate_is_one_span_over_the_program_runs_in_its_worker_threads(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    devset = [
        dspy.Example(question=f"question {i}", answer="").with_inputs("question") for i in range(4)
    ]
    evaluate = dspy.Evaluate(devset=devset, metric=exact_match, num_threads=3)

    with dspy.context(lm=lm), using_session("s-eval"):
        result = evaluate(dspy.Predict("question -> answer"))

    assert result.score == 100.0
    finished = spans.get_finished_spans()
    run = one(finished, "Evaluate")
    assert run.parent is None
    assert run.attributes[KIND] == OpenInferenceSpanKindValues.CHAIN.value
    assert run.attributes["dspy.evaluate.devset_size"] == 4
    assert run.attributes["dspy.evaluate.score"] == 100.0
    assert json.loads(run.attributes[SpanAttributes.INPUT_VALUE]) == {
        "program": "Predict",
        "metric": "exact_match",
        "devset_size": 4,
    }
    predictions = by_name(finished, "Predict.forward")
    assert len(predictions) == 4
    assert all(parent_of(finished, p) is run for p in predictions)
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-eval"}
