"""Tool patterns: exact names, globs, and either qualified by a server (``github/create_*``).

Matching is case-sensitive on the full name, with no normalisation of any kind (no case folding, no
Unicode NFKC): a rule written for ``get_balance`` must never be reached by ``GET_BALANCE``, ``get__balance``
or a Cyrillic look-alike. Globs are compiled to regular expressions once, at load.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

GLOB_CHARS = frozenset("*?[")


def pointer_escape(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """A JSON Pointer from reference tokens: ``pointer("tools", "a/b", "limits", 0)`` is ``/tools/a~1b/limits/0``."""
    return "".join("/" + pointer_escape(str(t)) for t in tokens)


def is_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def _literal_count(glob: str) -> int:
    # Characters outside wildcards and bracket expressions: "git_*" has 4, "git_[lp]*" has 4, "*" has 0.
    count = 0
    i = 0
    n = len(glob)
    while i < n:
        c = glob[i]
        if c in "*?":
            i += 1
        elif c == "[":
            # fnmatch's rule: a "]" right after "[" or "[!" is literal; an unclosed "[" is itself literal.
            j = i + 1
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                count += 1
                i += 1
            else:
                i = j + 1
        else:
            count += 1
            i += 1
    return count


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed tool pattern.

    ``specificity`` orders matching patterns: server-qualified before unqualified, exact before glob, then
    the glob with more literal characters. Equal specificity is a tie (resolved by the strictest action).
    """

    text: str
    server: str | None
    name: str
    exact: bool
    specificity: tuple[int, int, int]
    _match: Callable[[str], bool]

    def matches(self, tool: str, server: str | None) -> bool:
        if self.server is not None and self.server != server:
            return False
        return self._match(tool)


def check_pattern(text: str) -> str | None:
    """Why ``text`` is not a valid tool pattern, or ``None`` when it is."""
    if not isinstance(text, str) or not text:
        return "a tool pattern must be a non-empty string"
    server, sep, name = text.partition("/")
    if sep:
        if not server:
            return f"{text!r} has an empty server part; write 'server/tool' or just 'tool'"
        if is_glob(server):
            return (
                f"{text!r}: the server part {server!r} may not contain glob characters (* ? [); "
                "server names are matched literally, only the tool part may be a glob"
            )
        if not name:
            return f"{text!r} has an empty tool part; write 'server/tool' or 'server/*'"
    return None


def parse_pattern(text: str) -> Pattern:
    """Parse a pattern already accepted by :func:`check_pattern` (split on the FIRST ``/``)."""
    server_part, sep, name_part = text.partition("/")
    server, name = (server_part, name_part) if sep else (None, text)
    qualified = 1 if server is not None else 0
    if is_glob(name):
        regex_match = re.compile(fnmatch.translate(name)).match
        return Pattern(
            text, server, name, False, (qualified, 0, _literal_count(name)), lambda t: regex_match(t) is not None
        )
    return Pattern(text, server, name, True, (qualified, 1, len(name)), functools.partial(operator.eq, name))
