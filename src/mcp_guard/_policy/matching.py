"""Tool patterns: exact names, globs, and either qualified by a server (``github/create_*``).

Matching is case-sensitive on the full name, with no normalisation of any kind (no case folding, no
Unicode NFKC): a rule written for ``get_balance`` must never be reached by ``GET_BALANCE``, ``get__balance``
or a Cyrillic look-alike.

Patterns mean one thing (spec section 8): only ``*`` is a wildcard (any run of characters, ``/`` included);
every other character, ``?`` and ``[`` too, is literal, so a tool really named ``tool[1]`` is matched by the
pattern ``tool[1]`` and nothing else. A pattern holds at most one ``/``, which separates the server from
the tool: ``a/b/withdraw`` could be server ``a`` with tool ``b/withdraw`` or server ``a/b`` with tool
``withdraw``, so it is refused at load. A ``*``-only glob is matched by :func:`glob_matcher` in linear time
(no regular expression, so no pattern can backtrack).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

WILDCARD = "*"
T = TypeVar("T")


def pointer_escape(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """A JSON Pointer from reference tokens: ``pointer("tools", "a/b", "limits", 0)`` is ``/tools/a~1b/limits/0``."""
    return "".join("/" + pointer_escape(str(t)) for t in tokens)


def is_glob(text: str) -> bool:
    return WILDCARD in text


def _literal_count(glob: str) -> int:
    # Characters other than the wildcard: "git_*" has 4, "*" has 0.
    return len(glob) - glob.count(WILDCARD)


def glob_matcher(glob: str) -> Callable[[str], bool]:
    """A matcher for a glob where only ``*`` is special (it matches any run of characters, even empty).

    Greedy leftmost search is exact for such globs: the first part must start the text, the last must end
    it, and each part between is taken at its first occurrence after the previous one (taking it later can
    only leave less room for the rest). Cost is linear in the text for each part; no backtracking.
    """
    if WILDCARD not in glob:
        return glob.__eq__
    parts = glob.split(WILDCARD)
    head, middle, tail = parts[0], tuple(p for p in parts[1:-1] if p), parts[-1]
    least = len(head) + len(tail) + sum(len(p) for p in middle)
    if not middle:
        if not tail:
            return (lambda t: t.startswith(head)) if head else (lambda t: True)
        return lambda t: len(t) >= least and t.startswith(head) and t.endswith(tail)

    def match(text: str) -> bool:
        if len(text) < least or not text.startswith(head) or not text.endswith(tail):
            return False
        pos, stop = len(head), len(text) - len(tail)
        for part in middle:
            found = text.find(part, pos, stop)
            if found < 0:
                return False
            pos = found + len(part)
        return True

    return match


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
        """Whether a call of ``tool`` on ``server`` matches; a call whose server is unknown (``None``) is
        matched by a server-qualified pattern on its tool part alone (the strict reading, spec section 8)."""
        if self.server is not None and server is not None and self.server != server:
            return False
        return self._match(tool)


def check_pattern(text: str) -> str | None:
    """Why ``text`` is not a valid tool pattern, or ``None`` when it is."""
    if not isinstance(text, str) or not text:
        return "a tool pattern must be a non-empty string"
    if text.count("/") > 1:
        return (
            f"{text!r} can be read two ways (which '/' separates the server from the tool?); a pattern holds at "
            "most one '/': 'server/tool' or 'tool', and a server name never contains '/'"
        )
    server, sep, name = text.partition("/")
    if sep:
        if not server:
            return f"{text!r} has an empty server part; write 'server/tool' or just 'tool'"
        if is_glob(server):
            return (
                f"{text!r}: the server part {server!r} may not contain glob characters ('*'); "
                "server names are matched literally, only the tool part may be a glob"
            )
        if not name:
            return f"{text!r} has an empty tool part; write 'server/tool' or 'server/*'"
    return None


def parse_pattern(text: str) -> Pattern:
    """Parse a pattern already accepted by :func:`check_pattern`."""
    server_part, sep, name_part = text.partition("/")
    server, name = (server_part, name_part) if sep else (None, text)
    qualified = 1 if server is not None else 0
    if is_glob(name):
        return Pattern(text, server, name, False, (qualified, 0, _literal_count(name)), glob_matcher(name))
    return Pattern(text, server, name, True, (qualified, 1, len(name)), name.__eq__)


def literal_prefix(glob: str) -> str:
    """The characters before the first wildcard: ``git_*`` -> ``git_``; ``*_log`` -> ``""``."""
    return glob.partition(WILDCARD)[0]


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
