"""What a session has seen and done, as the pure evaluator reads it: :class:`SessionView`, and provenance matching.

The guard keeps session memory in the store (:mod:`mcp_guard._guard.memory`) and hands the evaluator a
:class:`SessionView` built from it; ``Policy.evaluate(..., session_view=...)`` stays pure because the view is an
argument. A view holds the user's requests, the results the session's tools returned (each with its tool,
server and trust label), the tools and classes that ran, whether an untrusted result was seen, how many calls
ran, and the keyed fingerprints of values a result rule redacted or a detector flagged.

Provenance (``from`` / ``not_from``): a value *appears in* a text when, after both are normalised (case folded,
runs of white space made one space), the value occurs in the text as a whole token: the characters just
before and after the occurrence do not continue it. A letter, digit or ``_`` continues a token; so does one of
``. - @ + / % & ? # ~ '`` when a letter or digit follows it on the far side (so ``bob@example.com`` is not in
``alice.bob@example.com``, ``100.50`` is not in ``1100.50`` or ``100.505``, but ``100.50`` is in
``pay 100.50.`` and ``DE89 3704...`` is in ``IBAN:DE89 3704...``). ``:`` and ``=`` and quotes never continue a
token, so ``to=bob@example.com`` and ``"iban":"DE89..."`` (compact JSON) hold their values. Numbers (a JSON
number leaf) are compared by value with every number written in the text: ``100.5`` matches ``100.50``,
``1,000.50`` and ``1000.5``; a comma alone counts as a decimal point or as a thousands separator, either.
Matching is case-insensitive for every string (an address or a URL the model re-cases still matches; the
trade-off: a value that differs from the trusted text only by case is taken to be the same value).
Booleans and ``null`` carry no provenance: they always match. An empty string matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

Trust = Literal["trusted", "untrusted"]
#: The named sources a ``from`` condition may list besides tool patterns.
SOURCES: Final = ("user", "trusted", "untrusted")

_SPACE = re.compile(r"\s+")
# Characters that continue a token on their own, and those that continue it only when a letter or digit follows.
_JOINERS: Final = frozenset(".-@+/%&?#~'")
# Numbers as written in text: digits with optional ',' or '.' groups (thousands or decimals), an optional sign.
_NUMBER = re.compile(r"(?<![\w.,])[-+]?\d+(?:[.,]\d+)*(?![\w]|[.,]\d)")


def normalise(text: str) -> str:
    """Case folded, white space collapsed to one space, trimmed: the form provenance compares."""
    return _SPACE.sub(" ", text.casefold()).strip()


def _continues(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _left_ok(text: str, start: int) -> bool:
    if start == 0:
        return True
    before = text[start - 1]
    if _continues(before):
        return False
    return not (before in _JOINERS and start > 1 and _continues(text[start - 2]))


def _right_ok(text: str, end: int) -> bool:
    if end >= len(text):
        return True
    after = text[end]
    if _continues(after):
        return False
    return not (after in _JOINERS and end + 1 < len(text) and _continues(text[end + 1]))


def token_in(needle: str, text: str) -> bool:
    """Whether the normalised ``needle`` occurs in the normalised ``text`` as a whole token.

    A side of the needle that is not a letter or digit needs no boundary there: it cannot be glued to a word.
    """
    if not needle:
        return True
    head, tail = _continues(needle[0]), _continues(needle[-1])
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        if (not head or _left_ok(text, start)) and (not tail or _right_ok(text, end)):
            return True
        start = text.find(needle, start + 1)
    return False


def number_values(text: str) -> set[Decimal]:
    """Every number written in ``text``, each ambiguous comma read both ways (``1,5`` is 1.5 and 15)."""
    found: set[Decimal] = set()
    for match in _NUMBER.finditer(text):
        written = match.group()
        readings = {written.replace(",", "")}
        if "," in written and "." not in written:
            readings.add(written.replace(",", "."))
        for reading in readings:
            try:
                found.add(Decimal(reading))
            except InvalidOperation:  # "1.2.3": not one number
                continue
    return found


def leaves(value: Any) -> Iterator[str | int | float]:
    """The string and number leaves of a JSON value (iterative; booleans and null carry no provenance)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, (str, int, float)):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


@dataclass(frozen=True, slots=True)
class ResultSeen:
    """One tool result the session saw: which tool (and server) returned it, its trust label, and its text."""

    tool: str
    server: str | None
    trust: Trust
    text: str


class _Source:
    """Normalised texts of one source, joined once, and the numbers written in them (computed on first use)."""

    __slots__ = ("_numbers", "text")

    def __init__(self, texts: Iterable[str]) -> None:
        # A newline cannot occur in a normalised text, so it separates texts: no token spans two of them.
        self.text = "\n".join(normalise(t) for t in texts)
        self._numbers: set[Decimal] | None = None

    def has(self, leaf: str | int | float) -> bool:
        if isinstance(leaf, str):
            return token_in(normalise(leaf), self.text)
        if self._numbers is None:
            self._numbers = number_values(self.text)
        try:
            return Decimal(repr(leaf) if isinstance(leaf, float) else leaf) in self._numbers
        except (InvalidOperation, ValueError):
            return False


@dataclass(frozen=True)
class SessionView:
    """What one session has seen and done, handed to the pure evaluator (``Policy.evaluate(session_view=)``).

    ``user``: the user's requests; ``results``: tool results in order; ``tools``: names of tools that ran, in
    order; ``classes``: their risk classes, each once; ``untrusted``: an untrusted result was seen; ``calls``:
    how many calls ran; ``secrets``: keyed fingerprints (:func:`fingerprint`) of values a result rule redacted
    or a detector flagged, and ``secret_key`` the key they were made with. An empty view is a session that
    has seen nothing: ``from: [user]`` then fails, ``session.calls`` is 0.
    """

    user: tuple[str, ...] = ()
    results: tuple[ResultSeen, ...] = ()
    tools: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    untrusted: bool = False
    calls: int = 0
    secrets: frozenset[str] = frozenset()
    secret_key: bytes = b""
    _sources: dict[str, _Source] = field(default_factory=dict, repr=False, compare=False)

    def source(self, name: str, match: Any = None) -> _Source:
        """The texts of a named source (``user``, ``trusted``, ``untrusted``) or of a tool pattern's results.

        ``match`` is the pattern's matcher ``(tool, server) -> bool``, for a pattern source.
        """
        found = self._sources.get(name)
        if found is None:
            if name == "user":
                texts: Iterable[str] = self.user
            elif name in ("trusted", "untrusted"):
                texts = (r.text for r in self.results if r.trust == name)
            else:
                texts = (r.text for r in self.results if match is not None and match(r.tool, r.server))
            found = self._sources[name] = _Source(texts)
        return found

    def tool_with(self, leaf: str | int | float, trust: Trust = "untrusted") -> str | None:
        """The latest tool whose result (of this trust) holds ``leaf``, to name where a value came from."""
        for seen in reversed(self.results):
            if seen.trust == trust and _Source((seen.text,)).has(leaf):
                return seen.tool
        return None


EMPTY_VIEW: Final = SessionView()


def compact(value: str) -> str:
    """``value`` case folded with every white space character removed."""
    return _SPACE.sub("", value.casefold())


#: Shortest secret remembered: shorter values (a PIN, a two-letter word) would match ordinary text.
MIN_SECRET_CHARS: Final = 6


def _mac_key(key: bytes) -> bytes:
    """BLAKE2b takes keys of at most 64 bytes: a longer one is hashed down to 64."""
    return key if len(key) <= 64 else hashlib.sha512(key).digest()


def _mac(data: str, key: bytes) -> str:
    # BLAKE2b in its keyed mode is a MAC in itself (no HMAC construction needed) and about three times faster
    # than HMAC-SHA256 here, which matters: no_secrets computes one per character of an outgoing argument.
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), key=_mac_key(key), digest_size=16).hexdigest()


def fingerprint(value: str, key: bytes) -> str:
    """The keyed fingerprint session memory keeps of a secret: ``<length>:<keyed BLAKE2b>`` of its compact form.

    White space is removed and case folded first (:func:`compact`), so the same secret split by spaces or
    re-cased has the same fingerprint; ``no_secrets`` compares these, never the value. The length (of the
    compact form) tells :func:`secret_in` which substrings to look at. Without the key (the audit key, or the
    store's own) a fingerprint cannot be checked against a guess.
    """
    squeezed = compact(value)
    return f"{len(squeezed)}:{_mac(squeezed, key)}"


#: Most MACs one ``no_secrets`` check computes (characters times distinct secret lengths, about a second);
#: an argument that would need more counts as holding a secret (the strict side), so no argument is a DoS.
MAX_SECRET_SCAN: Final = 1_000_000


def secret_in(text: str, view: SessionView) -> bool:
    """Whether some remembered secret occurs in ``text``, also split by white space or re-cased.

    Each substring of the compacted text as long as a remembered secret is fingerprinted and looked up: one
    MAC per character and distinct secret length, linear in the text. Past :data:`MAX_SECRET_SCAN` MACs the
    answer is yes (fail closed).
    """
    if not view.secrets:
        return False
    squeezed = compact(text)
    key = _mac_key(view.secret_key)
    secrets = view.secrets
    blake2b = hashlib.blake2b
    lengths = _lengths(secrets)
    if len(squeezed) * len(lengths) > MAX_SECRET_SCAN:
        return True
    for n in lengths:
        prefix = f"{n}:"
        for i in range(len(squeezed) - n + 1):
            piece = squeezed[i : i + n].encode("utf-8", "surrogatepass")
            if prefix + blake2b(piece, key=key, digest_size=16).hexdigest() in secrets:
                return True
    return False


def _lengths(secrets: frozenset[str]) -> list[int]:
    lengths: set[int] = set()
    for fp in secrets:
        head, _, _ = fp.partition(":")
        if head.isdigit():
            lengths.add(int(head))
    return sorted(lengths)


__all__ = [
    "EMPTY_VIEW",
    "MIN_SECRET_CHARS",
    "SOURCES",
    "ResultSeen",
    "SessionView",
    "Trust",
    "compact",
    "fingerprint",
    "leaves",
    "normalise",
    "number_values",
    "secret_in",
    "token_in",
]
