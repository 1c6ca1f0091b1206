"""A Griffe extension for the API reference: Sphinx roles in docstrings become inline code.

convotel's docstrings use reST cross-reference roles (``:class:`CallSpan```), which Markdown
would print as written; this rewrites them to ```CallSpan``` when Griffe loads the package (the
mechanism Griffe's documentation gives for pre-processing docstrings).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`~?\.?([^`]+)`")


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite ``:role:`target``` to ```target``` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
