"""Cost in USD as the ``convotel`` command prints it."""

from __future__ import annotations

import math

__all__ = ["format_cost"]


def format_cost(usd: float | None, unpriced_calls: int = 0) -> str:
    """``$12.34`` from a dollar, ``$0.0123`` under it, and small figures to two significant
    digits (``$0.0000084``); ``-`` when nothing was priced; a ``+`` marks a figure that leaves
    out model calls without a price (an unknown model...)."""
    if usd is None:
        return "-"
    if usd >= 1:
        text = f"${usd:,.2f}"
    elif usd <= 0:
        text = "$0"
    else:
        decimals = min(12, max(4, 1 - math.floor(math.log10(usd))))
        text = f"${usd:.{decimals}f}"
    return text + "+" if unpriced_calls else text
