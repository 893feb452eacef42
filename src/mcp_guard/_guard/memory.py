"""Session memory as the guard keeps it in the store: which parts, what a record holds, and the view built back.

A session's memory has four parts (the store keeps each as a bounded log of text records, oldest out; see
``Store.session_append``):

- ``texts``: the user's requests (``{"s": "u", "t": text}``) and the tools' results
  (``{"s": "r", "tool": ..., "srv": ..., "tr": "t" | "u", "t": text}``), kept normalised for provenance; bounded by
  ``Guard(session_memory_bytes=...)``;
- ``calls``: one record per call that ran (``[tool, server, class, trust]``): ``session.tools`` /
  ``session.classes`` read the records kept, ``session.calls`` the count of every one ever appended;
- ``untrusted``: one record per untrusted result seen; ``session.untrusted`` is whether any was ever appended,
  so it survives trimming;
- ``secrets``: keyed fingerprints (:func:`mcp_guard._policy.session.fingerprint`) of values a result rule redacted or a
  detector flagged, never the values.

Only the parts some check of the policy reads are recorded and read (``Policy.session_reads``), so a policy
without session rules costs no store round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from mcp_guard._policy.session import MIN_SECRET_CHARS, ResultSeen, SessionView, Trust, fingerprint, normalise
from mcp_guard._stores._base import Part

#: The store parts each kind of check needs.
PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    "texts": ("texts",),
    "calls": ("calls", "untrusted"),
    "secrets": ("secrets",),
}
#: Default bytes of each part kept per session (``texts`` follows ``Guard(session_memory_bytes=...)``).
DEFAULT_CAPS: Final[Mapping[str, int]] = {
    "texts": 256 * 1024,
    "calls": 64 * 1024,
    "untrusted": 64,
    "secrets": 64 * 1024,
}


def parts_to_read(reads: Iterable[str]) -> list[str]:
    return [part for kind in sorted(reads) for part in PARTS[kind]]


def caps(texts_bytes: int) -> dict[str, int]:
    return {**DEFAULT_CAPS, "texts": texts_bytes}


def input_record(text: str) -> str:
    return json.dumps({"s": "u", "t": normalise(text)}, ensure_ascii=False)


def result_records(
    reads: frozenset[str],
    tool: str,
    server: str | None,
    risk_class: str | None,
    trust: Trust,
    text: str | None,
    flagged: Iterable[str],
    key: bytes | None,
) -> dict[str, list[str]]:
    """What one call that ran adds to session memory, for the parts the policy reads."""
    records: dict[str, list[str]] = {}
    if "calls" in reads:
        records["calls"] = [json.dumps([tool, server, risk_class, trust], ensure_ascii=False)]
        if trust == "untrusted":
            records["untrusted"] = ["1"]
    if "texts" in reads and text:
        record = {"s": "r", "tool": tool, "srv": server, "tr": "u" if trust == "untrusted" else "t"}
        records["texts"] = [json.dumps({**record, "t": normalise(text)}, ensure_ascii=False)]
    if "secrets" in reads and key is not None:
        prints = sorted({fingerprint(v, key) for v in flagged if len(v.strip()) >= MIN_SECRET_CHARS})
        if prints:
            records["secrets"] = prints
    return records


def view_from(parts: Mapping[str, Part], key: bytes | None) -> SessionView:
    """The :class:`SessionView` of what the store returned (records that do not parse are skipped)."""
    user: list[str] = []
    results: list[ResultSeen] = []
    for record in parts.get("texts", ([], 0))[0]:
        item = _load(record)
        if not isinstance(item, dict) or not isinstance(item.get("t"), str):
            continue
        if item.get("s") == "u":
            user.append(item["t"])
        elif item.get("s") == "r" and isinstance(item.get("tool"), str):
            server = item.get("srv") if isinstance(item.get("srv"), str) else None
            results.append(
                ResultSeen(item["tool"], server, "untrusted" if item.get("tr") == "u" else "trusted", item["t"])
            )
    tools: list[str] = []
    classes: dict[str, None] = {}
    calls_records, calls_total = parts.get("calls", ([], 0))
    for record in calls_records:
        item = _load(record)
        if isinstance(item, list) and len(item) == 4 and isinstance(item[0], str):
            tools.append(item[0])
            if isinstance(item[2], str):
                classes.setdefault(item[2], None)
    secrets = frozenset(parts.get("secrets", ([], 0))[0])
    return SessionView(
        user=tuple(user),
        results=tuple(results),
        tools=tuple(tools),
        classes=tuple(classes),
        untrusted=parts.get("untrusted", ([], 0))[1] > 0,
        calls=calls_total,
        secrets=secrets,
        secret_key=key or b"",
    )


def _load(record: str) -> Any:
    try:
        return json.loads(record)
    except ValueError:
        return None


__all__ = ["DEFAULT_CAPS", "PARTS", "caps", "input_record", "parts_to_read", "result_records", "view_from"]
