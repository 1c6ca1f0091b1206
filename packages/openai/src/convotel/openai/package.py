"""The instrumented library, as plain requirement strings (no extras) for the OTel loader."""

_instruments = ("openai >= 2.0.0, < 4",)

#: The instrumentation scope (tracer) name of this package's spans.
INSTRUMENTATION_NAME = "convotel.openai"
