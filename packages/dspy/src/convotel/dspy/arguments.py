"""A wrapped call's arguments by parameter name, for recording a module's inputs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["bound_arguments"]

_NOT_POSITIONAL = (
    inspect.Parameter.VAR_POSITIONAL,
    inspect.Parameter.KEYWORD_ONLY,
    inspect.Parameter.VAR_KEYWORD,
)


def bound_arguments(
    function: Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    method: bool = False,
) -> dict[str, Any]:
    """Arguments by parameter name, positional ones bound to ``function``'s signature.

    With ``method=True`` ``function`` is an unbound method and ``args`` do not include ``self``.
    ``**kwargs`` parameters are flattened into the result; positional arguments that cannot be
    named are kept as a list under ``"args"``.
    """
    if not args or function is None:
        return dict(kwargs)
    try:
        parameters = inspect.signature(function).parameters
        names = list(parameters)[1:] if method else list(parameters)
        positional = dict(zip(names, args, strict=False))
        if len(args) > len(names) or any(
            parameters[name].kind in _NOT_POSITIONAL for name in positional
        ):
            return {"args": list(args), **kwargs}
    except (TypeError, ValueError):
        return {"args": list(args), **kwargs}
    return {**positional, **kwargs}
