"""The framework this instrumentor traces (checked by ``opentelemetry-instrument``)."""

_instruments = ("llama-index-core >= 0.14.9",)
