"""Built-in detectors a policy can name (``{"result.text": {"detect": ["secrets", "pii"]}}``): each finds spans.

- ``secrets``: keys, tokens, private keys, passwords in URLs and in ``password = ...`` assignments, found by the
  plugins of `detect-secrets <https://github.com/Yelp/detect-secrets>`_ (extra ``secrets``), not by patterns
  of our own. Every plugin but ``IPPublicDetector`` (an address is not a secret) runs; the keyword-driven
  ones (``KeywordDetector`` and the cloud providers' assignment detectors, ten times slower than the rest)
  only on lines that hold one of their keywords. A PEM private key is taken whole, header to footer.
- ``pii``: e-mail addresses, phone numbers (international ``+`` form, or ``(555) 123-4567`` national form),
  IBANs that pass the ISO 13616 mod-97 check, and card numbers (13-19 digits) that pass the Luhn check. Our
  own patterns, run on RE2 (linear time).

Scanning is bounded: text past :data:`MAX_SCAN_CHARS` is not scanned, and :func:`detect` says so (``complete``
False), so a caller can take the strict side. Long lines are scanned in overlapping pieces, so no detector
regex ever sees more than :data:`_PIECE` characters at once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from mcp_guard._errors import require_extra

DETECTORS: Final = ("secrets", "pii")
#: The most text one scan reads (characters); past it the scan is incomplete (the strict side).
MAX_SCAN_CHARS: Final = 1_000_000
_PIECE = 2_000  # longest stretch a detector regex sees at once
_OVERLAP = 256  # consecutive pieces share this much, so a secret on a cut is still seen whole


@dataclass(frozen=True, slots=True)
class Found:
    """What one scan found: spans ``(start, end)`` into the text, and whether the whole text was read."""

    spans: tuple[tuple[int, int], ...]
    complete: bool = True

    def values(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.spans]


def detect(text: str, names: Iterable[str]) -> Found:
    """Spans of ``text`` that the named detectors flag, merged and in order."""
    complete = len(text) <= MAX_SCAN_CHARS
    scanned = text[:MAX_SCAN_CHARS]
    spans: list[tuple[int, int]] = []
    for name in names:
        spans.extend(_DETECT[name](scanned))
    return Found(_merge(spans), complete)


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _pieces(text: str) -> Iterable[tuple[int, str]]:
    """(offset, line or piece of a long line): what the detectors scan."""
    offset = 0
    for line in text.split("\n"):
        if len(line) <= _PIECE:
            yield offset, line
        else:
            step = _PIECE - _OVERLAP
            for at in range(0, len(line) - _OVERLAP, step):
                yield offset + at, line[at : at + _PIECE]
        offset += len(line) + 1


# -- secrets: detect-secrets' plugins --------------------------------------------------------------------

_KEYWORD_DRIVEN = frozenset(
    {
        "KeywordDetector",
        "CloudantDetector",
        "IbmCloudIamDetector",
        "IbmCosHmacDetector",
        "SoftlayerDetector",
    }
)
# A line without one of these holds no assignment those plugins look for (their patterns all require one).
_TRIGGERS = re.compile(r"key|pass|pwd|secret|token|contrase|cloudant|softlayer|api", re.IGNORECASE)
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*-----")
_lock = threading.Lock()
_plugins: tuple[list[Any], list[Any]] | None = None


def _load_plugins() -> tuple[list[Any], list[Any]]:
    """(plugins run on every line, keyword-driven plugins), built once."""
    global _plugins
    with _lock:
        if _plugins is None:
            require_extra("detect_secrets", "secrets", "the 'secrets' detector")
            from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

            every: list[Any] = []
            keyword: list[Any] = []
            classes: Iterable[Any] = get_mapping_from_secret_type_to_class().values()
            for cls in classes:
                if cls.__name__ == "IPPublicDetector":
                    continue
                (keyword if cls.__name__ in _KEYWORD_DRIVEN else every).append(cls())
            _plugins = (every, keyword)
        return _plugins


def secrets_available() -> bool:
    """Whether the ``secrets`` detector can run (detect-secrets is installed); loads it."""
    try:
        _load_plugins()
    except ImportError:
        return False
    return True


def _plugin_values(plugin: Any, piece: str) -> Iterable[tuple[int, int]]:
    """Spans within ``piece`` of what one plugin flags."""
    denylist = getattr(plugin, "denylist", None)
    if denylist is not None:  # a regex detector: its own patterns, but with spans (findall gives only groups)
        for regex in denylist:
            for match in regex.finditer(piece):
                groups = [i for i in range(1, (match.re.groups or 0) + 1) if match.group(i)]
                best = max(groups, key=lambda i: len(match.group(i)), default=0)
                # A long group is the secret inside its context (``aws ... = "<key>"``); a short one is a prefix
                # (``ghp`` of a GitHub token): then the whole match is the secret.
                use = best if best and len(match.group(best)) >= 8 else 0
                yield match.span(use)
        return
    limit = getattr(plugin, "entropy_limit", None)
    for value in plugin.analyze_string(piece):
        if not isinstance(value, str) or not value:
            continue
        if limit is not None and plugin.calculate_shannon_entropy(value) < limit:
            continue
        start = piece.find(value)
        while start != -1:
            yield start, start + len(value)
            start = piece.find(value, start + 1)


def _secret_spans(text: str) -> list[tuple[int, int]]:
    every, keyword = _load_plugins()
    spans: list[tuple[int, int]] = []
    for offset, piece in _pieces(text):
        if not piece.strip():
            continue
        plugins = every + keyword if _TRIGGERS.search(piece) else every
        for plugin in plugins:
            for start, end in _plugin_values(plugin, piece):
                if type(plugin).__name__ == "PrivateKeyDetector":
                    start, end = _pem_block(text, offset + start, offset + end)
                    spans.append((start, end))
                else:
                    spans.append((offset + start, offset + end))
    return spans


def _pem_block(text: str, start: int, end: int) -> tuple[int, int]:
    """The whole PEM block around a private-key header: from its ``-----BEGIN`` to the matching footer."""
    begin = text.rfind("-----", 0, start)
    begin = begin if begin != -1 and start - begin <= 16 else start
    footer = _PEM_END.search(text, end)
    return begin, footer.end() if footer is not None else len(text)


# -- pii: our own patterns, on RE2 -------------------------------------------------------------------------

_PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    "phone": r"\+\d[\d ()\-.]{6,20}\d|\(\d{3}\) ?\d{3}[ .\-]\d{4}|\b\d{3}[.\-]\d{3}[.\-]\d{4}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
    "card": r"\b\d(?:[ \-]?\d){12,18}\b",
}
_pii_compiled: dict[str, Callable[[str], Iterable[Any]]] = {}


def _finder(kind: str) -> Callable[[str], Iterable[Any]]:
    found = _pii_compiled.get(kind)
    if found is None:
        import re2  # type: ignore[import-untyped]  # google-re2, a core dependency

        options = re2.Options()
        options.log_errors = False
        found = _pii_compiled[kind] = re2.compile(_PII_PATTERNS[kind], options).finditer
    return found


def iban_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, the whole mod 97 is 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    digits = "".join(str(int(ch, 36)) for ch in moved)
    return int(digits) % 97 == 1


def luhn_valid(candidate: str) -> bool:
    """The Luhn checksum of a card number (spaces and dashes ignored)."""
    digits = [int(ch) for ch in candidate if ch.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _phone_digits_ok(candidate: str) -> bool:
    return 8 <= sum(ch.isdigit() for ch in candidate) <= 15


_PII_CHECKS: dict[str, Callable[[str], bool]] = {
    "email": lambda _: True,
    "phone": _phone_digits_ok,
    "iban": iban_valid,
    "card": luhn_valid,
}


def _pii_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for offset, piece in _pieces(text):
        if not piece.strip():
            continue
        for kind, check in _PII_CHECKS.items():
            for match in _finder(kind)(piece):
                start, end = match.span()
                if check(piece[start:end]):
                    spans.append((offset + start, offset + end))
    return spans


_DETECT: dict[str, Callable[[str], list[tuple[int, int]]]] = {"secrets": _secret_spans, "pii": _pii_spans}


__all__ = ["DETECTORS", "MAX_SCAN_CHARS", "Found", "detect", "iban_valid", "luhn_valid", "secrets_available"]
