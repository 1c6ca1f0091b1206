"""The instrumented library, as plain requirement strings (no extras) for the OTel loader."""

_instruments = ("dspy >= 3.0.0, < 4",)
