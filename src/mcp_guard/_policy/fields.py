"""Trust per field of a structured result: a rule's ``results`` written as a mapping. Pure.

``results: untrusted`` labels everything a tool returns. A structured result often mixes what an outsider wrote
(an e-mail's body, an event's description, a file's content) with what the system itself recorded (an event's
participants list, a file's owner and sharing list, a transfer's recipient). The mapping form labels fields::

    results:
      result: untrusted                    # the whole result (optional: else the rule's default label)
      result.json.*.participants: trusted  # this field of each element of a list
      result.json.*.shared_with: trusted

A key is ``result`` (the whole result) or ``result.json.<path>``: dot-separated segments, each a mapping key,
a list index, or ``*`` (any key of a mapping or any element of a list). A value in the result takes the label
of the longest path that reaches it (or reaches a mapping or list it is inside); two paths of the same length
with different labels give ``untrusted``; a value no path reaches takes the whole result's label. The keys of a
mapping take the mapping's label (``shared_with`` is a map from address to permission: when it is trusted, its
addresses are; the key ``shared_with`` itself belongs to the mapping that holds it).

How session memory reads it (:func:`split`): the structured form of the result (MCP ``structuredContent``, a
dict or list result, or a text that is a JSON document: :func:`mcp_guard._policy.results.result_json`) is
walked; the string and number values labelled ``trusted`` are remembered as a trusted result of the tool, so a
value copied from a trusted field passes ``from: [trusted]``. The result's whole text is remembered as
``untrusted`` as soon as any part of it is untrusted (what the model read is what could steer it; a value that
a trusted field and an untrusted text both hold is in both sources). A result with no structured form cannot be
split: it counts as untrusted when its whole label is, or when any field is labelled untrusted (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp_guard._policy.session import Trust

#: The key that labels the whole result in the mapping form of ``results``.
WHOLE: Final = "result"
#: What every field path starts with.
PREFIX: Final = "result.json."
#: The segment that matches any mapping key or list element.
ANY: Final = "*"
_LABELS: Final = ("trusted", "untrusted")


@dataclass(frozen=True, slots=True)
class FieldLabel:
    """One ``result.json.<path>: <label>`` entry: the path as written, its segments, and the label."""

    path: str
    segments: tuple[str, ...]
    label: Trust


def check_field_path(path: object) -> str | None:
    """Why ``path`` is not a key of the mapping form of ``results``, or None."""
    if not isinstance(path, str):
        return f"expected a string, got {type(path).__name__}"
    if path == WHOLE:
        return None
    if not path.startswith(PREFIX) or not path[len(PREFIX) :]:
        return f"{path!r} is not a result field; allowed: 'result' (the whole result) or 'result.json.<path>'"
    segments = path[len(PREFIX) :].split(".")
    if not all(segments):
        return f"{path!r} has an empty segment; write keys, list indexes or '*' between single dots"
    for seg in segments:
        if seg != ANY and ANY in seg:
            return f"{path!r}: '*' must be a whole segment (any key or list element), not part of {seg!r}"
    return None


def check_results(value: object) -> list[tuple[tuple[str, ...], str]]:
    """Problems of a ``results`` value (a label, or a mapping of result paths to labels), each at its key."""
    if isinstance(value, str):
        if value in _LABELS:
            return []
        return [((), f"{value!r} is not a trust label; allowed: trusted, untrusted, or a mapping of result paths")]
    if not isinstance(value, Mapping):
        return [((), f"expected trusted, untrusted or a mapping of result paths to them, got {type(value).__name__}")]
    if not value:
        return [((), "an empty mapping labels nothing; give a label, or result paths ('result.json.<path>') to labels")]
    problems: list[tuple[tuple[str, ...], str]] = []
    for key, label in value.items():
        why = check_field_path(key)
        if why is not None:
            problems.append(((str(key),), why))
        elif not isinstance(label, str) or label not in _LABELS:
            shown = repr(label) if isinstance(label, str) else type(label).__name__
            problems.append(((str(key),), f"{shown} is not a trust label; allowed: trusted, untrusted"))
    return problems


def compile_results(value: Trust | Mapping[str, Trust] | None) -> tuple[Trust | None, tuple[FieldLabel, ...]]:
    """(the whole result's label or None, the field labels) of a validated ``results`` value."""
    if value is None or isinstance(value, str):
        return value, ()
    fields = tuple(
        FieldLabel(path, tuple(path[len(PREFIX) :].split(".")), label) for path, label in value.items() if path != WHOLE
    )
    return value.get(WHOLE), fields


def _label_at(path: tuple[str, ...], fields: tuple[FieldLabel, ...]) -> Trust | None:
    """The label the fields give the value at exactly ``path`` (untrusted wins a tie), or None."""
    found: Trust | None = None
    for f in fields:
        if len(f.segments) == len(path) and all(s in (ANY, p) for s, p in zip(f.segments, path, strict=True)):
            if f.label == "untrusted":
                return "untrusted"
            found = "trusted"
    return found


def split(doc: Any, whole: Trust, fields: tuple[FieldLabel, ...]) -> tuple[list[str], bool]:
    """(the trusted string and number values of ``doc``, whether some value of it is untrusted).

    Numbers come back as JSON text, so that provenance finds them as numbers written in a text. Booleans and
    ``null`` carry no provenance and count for neither side. Iterative: a deep document cannot exhaust the stack.
    """
    deepest = max((len(f.segments) for f in fields), default=0)
    trusted: list[str] = []
    untrusted = False
    stack: list[tuple[Any, tuple[str, ...], Trust]] = [(doc, (), whole)]
    while stack:
        node, path, label = stack.pop()
        if path and len(path) <= deepest:
            label = _label_at(path, fields) or label
        if isinstance(node, Mapping):
            for key, child in node.items():
                # A key is data too (an address in a sharing list): it takes the label of its mapping.
                if label == "trusted":
                    trusted.append(str(key))
                else:
                    untrusted = True
                stack.append((child, (*path, str(key)), label))
        elif isinstance(node, (list, tuple)):
            stack.extend((child, (*path, str(i)), label) for i, child in enumerate(node))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, (str, int, float)):
            text = node if isinstance(node, str) else json.dumps(node)
            if not text:
                continue
            if label == "trusted":
                trusted.append(text)
            else:
                untrusted = True
        else:
            untrusted = True  # a value we cannot read as JSON: the strict side
    return trusted, untrusted


def labelled(whole: Trust, fields: tuple[FieldLabel, ...], doc: Any) -> tuple[Trust, list[str]]:
    """How session memory keeps one result: (the label of its whole text, trusted values to keep as well).

    ``doc`` is the result's structured form, or None when it has none.
    """
    if not fields:
        return whole, []
    if not isinstance(doc, (Mapping, list, tuple)):
        if whole == "untrusted" or any(f.label == "untrusted" for f in fields):
            return "untrusted", []
        return "trusted", []
    trusted, untrusted = split(doc, whole, fields)
    if whole == "trusted" and not untrusted:
        return "trusted", []
    # Some of it is untrusted (always so when the whole is: the text may say more than the structured form).
    return "untrusted", trusted


__all__ = ["ANY", "PREFIX", "WHOLE", "FieldLabel", "check_field_path", "check_results", "compile_results", "labelled"]
