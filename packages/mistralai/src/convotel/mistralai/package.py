"""The instrumented library, as plain requirement strings (no extras) for the OTel loader."""

_instruments = ("mistralai >= 2.0.0, < 4",)
