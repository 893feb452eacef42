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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

GLOB_CHARS = frozenset("*?[")
T = TypeVar("T")


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


def literal_prefix(glob: str) -> str:
    """The characters before the first wildcard: ``git_*`` -> ``git_``; ``*_log`` -> ``""``."""
    for i, c in enumerate(glob):
        if c in GLOB_CHARS:
            return glob[:i]
    return glob


class GlobIndex(Generic[T]):
    """Globs bucketed by literal prefix, so a name is tested only against globs whose prefix it starts with.

    With 10,000 globs such as ``ns42_*`` a lookup costs one dict probe per distinct prefix length, not
    10,000 regex matches: resolving a never-seen name (model-supplied) stays cheap as policies grow.
    """

    def __init__(self, entries: Iterable[tuple[Pattern, T]]) -> None:
        self._by_prefix: dict[str, list[tuple[Pattern, T]]] = {}
        for pat, item in entries:
            self._by_prefix.setdefault(literal_prefix(pat.name), []).append((pat, item))
        self._lengths = sorted({len(p) for p in self._by_prefix})

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_prefix.values())

    def matching(self, name: str) -> Iterator[tuple[Pattern, T]]:
        """Every (pattern, item) whose glob matches ``name`` (server parts are not looked at)."""
        for length in self._lengths:
            if length > len(name):
                break
            bucket = self._by_prefix.get(name[:length])
            if bucket:
                for pat, item in bucket:
                    if pat._match(name):
                        yield pat, item
