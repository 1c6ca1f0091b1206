"""What an LLM call cost: OpenInference's ``llm.cost.*`` attributes, priced by ``genai-prices``.

Prices come from the data snapshot bundled with the installed ``genai-prices`` (never fetched over
the network by convotel); ``convotel.cost.prices_version`` records which release priced a span, so a
figure can be audited. A call is priced from its span's provider (``llm.provider``, else
``llm.system``), model (``llm.model_name``: the returned model, else the requested one) and token
counts. An unknown provider or model, or a span without token counts, gets no cost: never a guessed
one. Without ``genai-prices`` (a dependency of the core; 0.1.13 on Python 3.10) no span gets a cost.

The hot path: ``genai_prices.calc_price`` costs ~65-95 µs a call, most of it resolving which units
a model prices and decomposing the usage into them, the same work for every call to one model. So
the price entry is looked up once per (provider, model) (a bounded cache), and for a model whose
prices are flat per token, the library itself is asked once (with probe usages) what one more token
of each kind costs; a call then costs a few multiplications. Tiered prices and audio tokens take
the library's full calculation per call.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from openinference.semconv.trace import SpanAttributes

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice

__all__ = ["PRICES_VERSION", "cost_attributes", "prices_version"]

logger = logging.getLogger("convotel")

#: The price data that priced the span: ``genai-prices <version>``.
PRICES_VERSION = "convotel.cost.prices_version"

_PROVIDER = SpanAttributes.LLM_PROVIDER
_SYSTEM = SpanAttributes.LLM_SYSTEM
_MODEL = SpanAttributes.LLM_MODEL_NAME
_PROMPT = SpanAttributes.LLM_TOKEN_COUNT_PROMPT
_COMPLETION = SpanAttributes.LLM_TOKEN_COUNT_COMPLETION
_CACHE_READ = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ
_CACHE_WRITE = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE
_REASONING = SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING
_PROMPT_AUDIO = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_AUDIO
_COMPLETION_AUDIO = SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_AUDIO
_COST_PROMPT = SpanAttributes.LLM_COST_PROMPT
_COST_COMPLETION = SpanAttributes.LLM_COST_COMPLETION
_COST_TOTAL = SpanAttributes.LLM_COST_TOTAL
_COST_CACHE_READ = SpanAttributes.LLM_COST_PROMPT_DETAILS_CACHE_READ
_COST_CACHE_WRITE = SpanAttributes.LLM_COST_PROMPT_DETAILS_CACHE_WRITE
_COST_REASONING = SpanAttributes.LLM_COST_COMPLETION_DETAILS_REASONING

#: Span token counts -> genai-prices usage keys (the flat fast path prices these five).
_USAGE_KEYS: tuple[tuple[str, str], ...] = (
    (_PROMPT, "input_tokens"),
    (_CACHE_READ, "cache_read_tokens"),
    (_CACHE_WRITE, "cache_write_tokens"),
    (_COMPLETION, "output_tokens"),
    (_REASONING, "output_reasoning_tokens"),
)
_AUDIO_KEYS: tuple[tuple[str, str], ...] = (
    (_PROMPT_AUDIO, "input_audio_tokens"),
    (_COMPLETION_AUDIO, "output_audio_tokens"),
)
#: Probe usages: each key's count on top of the counts it is part of (a cache read is an input
#: token too), so every probe is a usage the library accepts.
_PROBE = 1_000_000
_PROBE_PARENTS = {
    "input_tokens": {},
    "cache_read_tokens": {"input_tokens": _PROBE},
    "cache_write_tokens": {"input_tokens": _PROBE},
    "output_tokens": {},
    "output_reasoning_tokens": {"output_tokens": _PROBE},
}
#: At most this many (provider, model) entries are kept (then the cache starts over).
_MAX_ENTRIES = 1024
#: USD figures are rounded to this many decimals (a millionth of a micro-dollar).
_DIGITS = 12
#: ``round(usd * _SCALE) / _SCALE`` is the double nearest ``k / 10**12``, as ``round(usd, 12)``
#: gives (which goes through decimal conversion: 2.5x slower); they differ only when
#: ``usd * 10**12`` is within a rounding error of a half (about 1 in 200,000 figures).
_SCALE = float(10**_DIGITS)

_Rates = tuple[tuple[float, float], ...]  # per usage key: (input, output) USD per token


class _Entry:
    """One (provider, model)'s price entry and its flat per-token rates per price period."""

    __slots__ = ("model", "rates", "version")

    def __init__(self, model: ModelInfo, version: str) -> None:
        self.model = model
        self.version = version
        #: ModelPrice (by identity) -> its per-token rates, or None if not flat.
        self.rates: dict[int, tuple[ModelPrice, _Rates | None]] = {}


_entries: dict[tuple[str, str], _Entry | None] = {}
#: The fast path: (provider, model) -> (flat rates, prices version, in force until: epoch
#: seconds) of a model priced per token (others take :func:`_price` every call).
_flat_prices: dict[tuple[str, str], tuple[_Rates, str, float]] = {}
_library: Any = None  # the genai_prices module once imported; False if it is not installed


def _genai_prices() -> Any:
    global _library
    if _library is None:
        try:
            import genai_prices  # on the first priced call only
            import genai_prices.data_snapshot
        except ImportError:
            logger.info("convotel: genai-prices is not installed; LLM spans record no cost")
            _library = False
        else:
            _library = genai_prices
    return _library


def prices_version() -> str | None:
    """``genai-prices <version>`` (and when its data was updated, if the application updated
    it), or ``None`` without ``genai-prices``."""
    library = _genai_prices()
    if not library:
        return None
    snapshot = library.data_snapshot.get_snapshot()
    version = f"genai-prices {library.__version__}"
    if snapshot.from_auto_update:
        version += f" (data updated {snapshot.timestamp.isoformat(timespec='seconds')})"
    return version


def _entry(provider: str, model: str) -> _Entry | None:
    key = (provider, model)
    try:
        return _entries[key]
    except KeyError:
        pass
    entry: _Entry | None = None
    library = _genai_prices()
    if library:
        snapshot = library.data_snapshot.get_snapshot()
        try:
            _, info = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            pass
        else:
            entry = _Entry(info, prices_version() or "")
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()
    _entries[key] = entry
    return entry


def _usage(counts: Mapping[str, int]) -> Any:
    return _genai_prices().Usage(**counts)


def _flat_rates(price: ModelPrice) -> _Rates | None:
    """What one more token of each usage key costs (input, output), asked of the library; None
    if the price is not linear in the tokens (tiers) or the library cannot price a probe."""
    from genai_prices.types import TieredPrices

    if any(isinstance(value, TieredPrices) for value in vars(price).values()):
        return None
    try:
        rates = []
        for _, usage_key in _USAGE_KEYS:
            parents = _PROBE_PARENTS[usage_key]
            with_key = price.calc_price(_usage({**parents, usage_key: _PROBE}))
            without = price.calc_price(_usage(parents)) if parents else _ZERO_PRICE
            rates.append(
                (
                    float(with_key["input_price"] - without["input_price"]) / _PROBE,
                    float(with_key["output_price"] - without["output_price"]) / _PROBE,
                )
            )
    except (ValueError, ArithmeticError):
        return None
    return tuple(rates)


_ZERO_PRICE = {"input_price": 0, "output_price": 0}


def _rates(entry: _Entry, price: ModelPrice) -> _Rates | None:
    found = entry.rates.get(id(price))
    if found is not None and found[0] is price:
        return found[1]
    rates = _flat_rates(price)
    entry.rates[id(price)] = (price, rates)
    return rates


def _count(value: object) -> int:
    return value if type(value) is int and value > 0 else 0


def _in_force_until(prices: Any, now: datetime.datetime) -> float | None:
    """Until when (epoch seconds) the price in force at ``now`` stays in force: forever for one
    price, the next start date (UTC midnight, as genai-prices compares dates) for prices by start
    date; ``None`` for prices by time of day (resolved on every call)."""
    types = _genai_prices().types
    if isinstance(prices, types.ModelPrice):
        return math.inf
    upcoming: list[datetime.date] = []
    for conditional in prices:
        constraint = conditional.constraint
        if constraint is None:
            continue
        if not isinstance(constraint, types.StartDateConstraint):
            return None
        if constraint.start_date > now.date():
            upcoming.append(constraint.start_date)
    if not upcoming:
        return math.inf
    midnight = datetime.datetime.combine(min(upcoming), datetime.time(), datetime.timezone.utc)
    return midnight.timestamp()


def _price(
    entry: _Entry, key: tuple[str, str], counts: tuple[int, ...], audio: tuple[int, int]
) -> tuple[_Rates | None, str, float, float] | None:
    """The slow path: the flat per-token rates of the price in force (remembered for the fast
    path until another price comes into force), else the library's full calculation of the usage
    (tiered prices, audio tokens): ``(rates, version, prompt cost, completion cost)``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    prices = entry.model.prices  # one price, or prices by period: then the one in force now
    price: ModelPrice = entry.model.get_prices(now)
    rates = None if audio[0] or audio[1] else _rates(entry, price)
    if rates is not None:
        until = _in_force_until(prices, now)
        if until is not None:
            if len(_flat_prices) >= _MAX_ENTRIES:
                _flat_prices.clear()
            _flat_prices[key] = (rates, entry.version, until)
        return rates, entry.version, 0.0, 0.0
    usage = {usage_key: n for (_, usage_key), n in zip(_USAGE_KEYS, counts, strict=True) if n}
    usage.update({usage_key: n for (_, usage_key), n in zip(_AUDIO_KEYS, audio, strict=True) if n})
    try:
        calculated = price.calc_price(_usage(usage))
    except (ValueError, ArithmeticError):
        return None
    return None, entry.version, float(calculated["input_price"]), float(calculated["output_price"])


def cost_attributes(
    pending: Mapping[str, Any],
    recorded: Mapping[str, Any] | None = None,
    *,
    truncated_at: int | None = None,
) -> dict[str, Any]:
    """The ``llm.cost.*`` attributes (USD) of an LLM span ending with the attributes ``pending``
    (its token counts are among them) after ``recorded`` (set before: provider and model may be
    there); empty when the call cannot be priced. A model name of ``truncated_at`` characters or
    more may have been cut (``TraceConfig.max_value_length``) and could name another model: such a
    call is not priced."""
    get = pending.get
    prompt = _count(get(_PROMPT))
    completion = _count(get(_COMPLETION))
    if not (prompt or completion):
        return {}
    provider = get(_PROVIDER) or get(_SYSTEM)
    model = get(_MODEL)
    if recorded is not None and not (provider and model):  # an SDK span's mapping: read rarely
        provider = provider or recorded.get(_PROVIDER) or recorded.get(_SYSTEM)
        model = model or recorded.get(_MODEL)
    if not (isinstance(provider, str) and isinstance(model, str)):
        return {}
    if truncated_at is not None and len(model) >= truncated_at:
        return {}
    cache_read, cache_write = _count(get(_CACHE_READ)), _count(get(_CACHE_WRITE))
    reasoning = _count(get(_REASONING))
    counts = (prompt, cache_read, cache_write, completion, reasoning)  # _USAGE_KEYS' order
    rates: _Rates | None
    flat = _flat_prices.get((provider, model))
    if (
        flat is not None
        and not (get(_PROMPT_AUDIO) or get(_COMPLETION_AUDIO))
        and time.time() < flat[2]
    ):
        # The common case: a model priced per token, no audio tokens, the same price in force.
        rates, version, _ = flat
    else:
        entry = _entry(provider, model)
        if entry is None:
            return {}
        audio = (_count(get(_PROMPT_AUDIO)), _count(get(_COMPLETION_AUDIO)))
        priced = _price(entry, (provider, model), counts, audio)
        if priced is None:
            return {}
        rates, version, prompt_cost, completion_cost = priced
    if rates is not None:  # straight-line: this runs for every priced call
        (p_in, p_out), (r_in, r_out), (w_in, w_out), (c_in, c_out), (x_in, x_out) = rates
        prompt_cost = (
            prompt * p_in + cache_read * r_in + cache_write * w_in + completion * c_in
        ) + reasoning * x_in
        completion_cost = (
            prompt * p_out + cache_read * r_out + cache_write * w_out + completion * c_out
        ) + reasoning * x_out
    attributes: dict[str, Any] = {
        _COST_PROMPT: round(prompt_cost * _SCALE) / _SCALE,
        _COST_COMPLETION: round(completion_cost * _SCALE) / _SCALE,
        _COST_TOTAL: round((prompt_cost + completion_cost) * _SCALE) / _SCALE,
        PRICES_VERSION: version,
    }
    if rates is not None:
        input_rate, output_rate = rates[0][0], rates[3][1]
        if counts[1]:  # a cached token: an input token at the cache-read rate
            attributes[_COST_CACHE_READ] = (
                round(counts[1] * (input_rate + rates[1][0]) * _SCALE) / _SCALE
            )
        if counts[2]:
            attributes[_COST_CACHE_WRITE] = (
                round(counts[2] * (input_rate + rates[2][0]) * _SCALE) / _SCALE
            )
        if counts[4]:  # a reasoning token: an output token at the reasoning rate
            attributes[_COST_REASONING] = (
                round(counts[4] * (output_rate + rates[4][1]) * _SCALE) / _SCALE
            )
    return attributes
