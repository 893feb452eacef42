"""Session memory as the guard keeps it in the store: which parts, what a record holds, and the view built back.

A session's memory has four parts (the store keeps each as a bounded log of text records, oldest out; see
``Store.session_append``):

- ``texts``: the user's requests (``{"s": "u", "t": text}``) and the tools' results
  (``{"s": "r", "tool": ..., "srv": ..., "tr": "t" | "u", "t": text}``), kept normalised for provenance; bounded by
  ``Guard(session_memory_bytes=...)``. A result whose rule labels fields (``results`` as a map) adds a second
  record of the same tool, ``"tr": "t"``, holding the values of its trusted fields separated by NUL (no token
  spans two of them);
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
from typing import TYPE_CHECKING, Any, Final

from mcp_guard._policy.fields import labelled
from mcp_guard._policy.results import ResultVerdict, result_json
from mcp_guard._policy.session import MIN_SECRET_CHARS, ResultSeen, SessionView, Trust, fingerprint, normalise
from mcp_guard._stores._base import Part

if TYPE_CHECKING:
    from mcp_guard._calls.call import ToolCall
    from mcp_guard._policy.policy import Policy

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


def result_trust(policy: Policy, call: ToolCall, verdict: ResultVerdict | None) -> tuple[Trust, list[str]]:
    """(the label session memory gives a result's text, the values of its trusted fields to keep as well).

    A result a ``taint`` rule held is untrusted whole. A rule whose ``results`` labels fields of a structured
    result has them split (:mod:`mcp_guard._policy.fields`), on the result as the model gets it (redacted).
    """
    if verdict is not None and verdict.tainted:
        return "untrusted", []
    whole, fields = policy.result_trust(call.tool, server=call.server, annotations=call.annotations)
    if not fields:
        return whole, []
    doc = None if verdict is None or verdict.withheld is not None else result_json(verdict.value, verdict.text)
    return labelled(whole, fields, doc)


#: Separates the values of one trusted-fields record: not white space (normalising keeps it) and never part of
#: a token, so no value matches across two of them.
_VALUES_SEP: Final = "\x00"


def result_records(
    reads: frozenset[str],
    tool: str,
    server: str | None,
    risk_class: str | None,
    trust: Trust,
    text: str | None,
    flagged: Iterable[str],
    key: bytes | None,
    trusted_values: Iterable[str] = (),
) -> dict[str, list[str]]:
    """What one call that ran adds to session memory, for the parts the policy reads.

    ``trusted_values``: the values of a result's trusted fields (``results`` as a map), kept as a trusted
    result of the tool beside its ``trust``-labelled text.
    """
    records: dict[str, list[str]] = {}
    if "calls" in reads:
        records["calls"] = [json.dumps([tool, server, risk_class, trust], ensure_ascii=False)]
        if trust == "untrusted":
            records["untrusted"] = ["1"]
    if "texts" in reads:
        record = {"s": "r", "tool": tool, "srv": server, "tr": "u" if trust == "untrusted" else "t"}
        texts = [json.dumps({**record, "t": normalise(text)}, ensure_ascii=False)] if text else []
        values = _VALUES_SEP.join(v for v in (normalise(v) for v in trusted_values) if v)
        if values:
            texts.append(json.dumps({**record, "tr": "t", "t": values}, ensure_ascii=False))
        if texts:
            records["texts"] = texts
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


__all__ = [
    "DEFAULT_CAPS",
    "PARTS",
    "caps",
    "input_record",
    "parts_to_read",
    "result_records",
    "result_trust",
    "view_from",
]
