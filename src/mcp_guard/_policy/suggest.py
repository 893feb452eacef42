""" "Did you mean ...?" for a misspelt name: a field of a policy or a case file, a condition operator.

``deny_iff`` is one keystroke from ``deny_if``; a list of every allowed field makes the reader find that
themselves. difflib's ratio is enough for names this short: one close match, or nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'deny_if'?)"`` when one of ``choices`` is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = ["did_you_mean"]
