"""A griffe extension for the API reference: the docstrings' Sphinx roles read as code, not as raw markup.

The docstrings are written for Python's help() and editors, with Sphinx roles (``:class:`~mcp_guard.Guard```,
``:meth:`evaluate```) and double-backquoted literals; mkdocstrings renders Markdown, where those show as
``:class:`` noise. Before rendering, a role becomes its target as code (the last dotted part for ``~``), and
``double backquotes`` become single ones.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def plain(text: str) -> str:
    """Sphinx roles and ``literals`` as Markdown code spans."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(_role, text))


class SphinxRoles(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
