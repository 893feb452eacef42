"""Where a field of a policy file is: JSON Pointer -> (line, column), 1-based, for editors and pre-commit.

Validation errors name a field by its JSON Pointer (``/tools/x/limits/0/max``); an editor wants a line and a
column. :func:`locate` reads the file's own text again (a small position-recording JSON scanner, or YAML
nodes' marks) and answers with the position of the deepest part of the pointer that exists in the file: the
key of an object member, the start of a list item, or (for a missing field) its parent. Best effort: text
that cannot be scanned gives ``None`` and the caller prints no position.

Only called on text that already passed the size and depth bounds of :mod:`mcp_guard._policy.model`, so the
recursion here is at most :data:`~mcp_guard._policy.model.MAX_DEPTH` deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mcp_guard._policy.matching import pointer_escape

Positions = dict[str, int]  # pointer -> character offset in the text

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


class _Unscannable(ValueError):
    pass


def _json_positions(text: str) -> Positions:
    found: Positions = {"": 0}

    def skip(i: int) -> int:
        m = _WS.match(text, i)
        return m.end() if m else i

    def items(i: int, close: str, item: Callable[[int, int], int]) -> int:
        # An object's members and an array's items are read by one loop: ``item(i, n)`` reads the n-th one
        # at ``i`` (past any white space) and returns where it ends; commas and the closing bracket are here.
        i = skip(i + 1)
        if text.startswith(close, i):
            return i + 1
        n = 0
        while True:
            i = skip(item(skip(i), n))
            n += 1
            if text.startswith(",", i):
                i += 1
                continue
            if text.startswith(close, i):
                return i + 1
            raise _Unscannable

    def value(i: int, where: str) -> int:
        i = skip(i)
        if i >= len(text):
            raise _Unscannable
        c = text[i]
        if c == "{":
            return items(i, "}", lambda at, _n: member(at, where))
        if c == "[":
            return items(i, "]", lambda at, n: element(at, f"{where}/{n}"))
        if c == '"':
            _, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            return int(end)
        m = _SCALAR.match(text, i)
        if not m:
            raise _Unscannable
        return m.end()

    def member(i: int, where: str) -> int:
        if not text.startswith('"', i):
            raise _Unscannable
        key, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        found.setdefault(f"{where}/{pointer_escape(key)}", i)
        end = skip(end)
        if not text.startswith(":", end):
            raise _Unscannable
        return value(end + 1, f"{where}/{pointer_escape(key)}")

    def element(i: int, where: str) -> int:
        found.setdefault(where, i)
        return value(i, where)

    value(0, "")
    return found


def _yaml_positions(text: str) -> dict[str, tuple[int, int]]:
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found: dict[str, tuple[int, int]] = {"": (1, 1)}
    if root is None:
        return found
    stack: list[tuple[Any, str]] = [(root, "")]
    seen: set[int] = set()  # an alias is one node reached twice: walk it once (never expand a "billion laughs")
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                member = f"{where}/{pointer_escape(str(key_node.value))}"
                found.setdefault(member, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                stack.append((value_node, member))
        elif isinstance(node, yaml.SequenceNode):
            for n, item in enumerate(node.value):
                member = f"{where}/{n}"
                found.setdefault(member, (item.start_mark.line + 1, item.start_mark.column + 1))
                stack.append((item, member))
    return found


class Locator:
    """Positions of the fields of one policy text; ``locate(pointer)`` -> ``(line, column)`` or ``None``."""

    def __init__(self, text: str, kind: str) -> None:
        self._text = text
        self._kind = kind
        self._lines: dict[str, tuple[int, int]] | None = None
        self._scanned = False

    def _scan(self) -> None:
        self._scanned = True
        try:
            if self._kind == "json":
                self._lines = {p: self._line_col(off) for p, off in _json_positions(self._text).items()}
            else:
                self._lines = _yaml_positions(self._text)
        except Exception:  # malformed text: the error message carries its own line; no positions here
            self._lines = None

    def _line_col(self, offset: int) -> tuple[int, int]:
        line = self._text.count("\n", 0, offset) + 1
        return line, offset - (self._text.rfind("\n", 0, offset) + 1) + 1

    def locate(self, ptr: str) -> tuple[int, int] | None:
        if not self._scanned:
            self._scan()
        if self._lines is None:
            return None
        while True:
            if ptr in self._lines:
                return self._lines[ptr]
            if not ptr:
                return None
            ptr = ptr.rsplit("/", 1)[0]


_AT = re.compile(r"at line (\d+) column (\d+)")


def position_in_message(message: str) -> tuple[int, int] | None:
    """The ``line N column M`` a parser error message carries (malformed JSON/YAML, an alias), if any."""
    m = _AT.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None
