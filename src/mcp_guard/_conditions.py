"""Conditions (``require``, ``deny_if``, ``approve_if``): validated and compiled once, at load.

A condition block maps a path to operators: ``{"args.amount": {"gt": 1000}, "identity": {"in": [...]}}``.
Each (path, operator) pair becomes one small closure, named by its own rule pointer
(``/tools/x/deny_if/args.amount-gt``), that returns ``None`` when the check passes and a reason when it does
not (``require``) or when it fires (``deny_if``, ``approve_if``).

Semantics where data is missing or of the wrong type:

* a missing path makes every comparison false (so ``require`` fails and ``deny_if`` does not fire),
  except ``exists: false``, which holds;
* a value of the wrong type for the operator (``gt`` against a string, ``regex`` against a number, NaN
  against anything numeric) resolves to the strict side: it fails ``require`` and fires ``deny_if`` and
  ``approve_if``, and the reason says the value had the wrong type. An argument the model shapes oddly
  must never slip past a check.
"""

from __future__ import annotations

import fnmatch
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

OPERATORS: Final = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "glob", "contains", "exists")
CONTEXT_PATHS: Final = ("identity", "session", "server", "tool")
Kind = Literal["require", "deny_if", "approve_if"]

_SYMBOL = {
    "eq": "==",
    "neq": "!=",
    "in": "in",
    "not_in": "not in",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "regex": "matches regex",
    "glob": "matches glob",
    "contains": "contains",
}
_NEGATED = {
    "eq": "is not equal to",
    "neq": "is equal to",
    "in": "is not in",
    "not_in": "is in",
    "lt": "is not <",
    "lte": "is not <=",
    "gt": "is not >",
    "gte": "is not >=",
    "regex": "does not match regex",
    "glob": "does not match glob",
    "contains": "does not contain",
}
_NUMERIC = frozenset({"lt", "lte", "gt", "gte"})
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
# Returned by an operator when the value has the wrong type for it.
_MISMATCH: Final = object()

# A compiled check: (args, identity, session, server, tool) -> None, or the reason it fails / fires.
Check = Callable[[Mapping[str, Any], "str | None", "str | None", "str | None", str], "str | None"]


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python but never a number in a policy; NaN compares false with everything,
    # so letting it through would let "amount": NaN pass a deny_if amount > 1000.
    t = type(value)
    if t is int:
        return True
    if t is float:
        return not math.isnan(value)  # type: ignore[arg-type]
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``, and ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # an argument object with a hostile __eq__ is simply not equal
        return False


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and math.isnan(value):
        return "NaN (not a number)"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def show_value(value: object, redacted: bool = False) -> str:
    """A value for a reason: ``repr`` for strings and numbers, JSON otherwise, cut to 80 characters."""
    if redacted:
        return "[redacted]"
    try:
        simple = type(value) in (int, float) or isinstance(value, str)
        text = repr(value) if simple else _json_text(value)
    except ValueError:  # an int too long to print (Python limits int -> str conversion)
        text = f"<{_type_name(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


# -- validation (load time) -----------------------------------------------------------------------------


def check_path(path: object) -> str | None:
    """Why ``path`` is not a condition path, or ``None``."""
    if not isinstance(path, str):
        return f"a condition path must be a string, got {_type_name(path)}"
    if path in CONTEXT_PATHS:
        return None
    if path.startswith("args.") and all(path[5:].split(".")):
        return None
    return f"{path!r} is not a condition path; allowed: args.<name>[.<name>...], identity, session, server, tool"


def check_operator(op: str, value: object) -> str | None:
    """Why ``{op: value}`` is not a valid check, or ``None``."""
    if op not in OPERATORS:
        return f"unknown operator {op!r}; allowed: {', '.join(OPERATORS)}"
    if op in ("in", "not_in") and not isinstance(value, list):
        return f"{op!r} needs a list of values, got {_type_name(value)}"
    if op in _NUMERIC and not _is_number(value):
        return f"{op!r} compares numbers and needs a number, got {_type_name(value)}"
    if op in ("regex", "glob") and not isinstance(value, str):
        return f"{op!r} needs a string pattern, got {_type_name(value)}"
    if op == "regex":
        try:
            re.compile(str(value))
        except re.error as exc:
            return f"invalid regular expression {value!r}: {exc}"
    if op == "exists" and not isinstance(value, bool):
        return f"'exists' needs true or false, got {_type_name(value)}"
    if op == "contains" and (isinstance(value, (Mapping, list)) or value is None):
        return f"'contains' needs a string, number or boolean, got {_type_name(value)}"
    return None


def validate_conditions(block: object) -> list[tuple[tuple[str, ...], str]]:
    """Problems in a condition block, as (relative path tokens, message); empty when valid."""
    if not isinstance(block, Mapping):
        return [((), f"conditions must be a mapping of path to operators, got {_type_name(block)}")]
    problems: list[tuple[tuple[str, ...], str]] = []
    for path, ops in block.items():
        why = check_path(path)
        if why:
            problems.append(((str(path),), why))
            continue
        if not isinstance(ops, Mapping):
            problems.append(
                ((path,), f"expected a mapping of operator to value (e.g. {{'gt': 100}}), got {_type_name(ops)}")
            )
            continue
        if not ops:
            problems.append(((path,), f"no operator given; allowed: {', '.join(OPERATORS)}"))
        for op, value in ops.items():
            why = check_operator(str(op), value)
            if why:
                problems.append(((path, str(op)), why))
    return problems


# -- compilation ----------------------------------------------------------------------------------------


def args_getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A reader for an ``args.a.b`` path: digit segments index lists; anything absent gives ``MISSING``."""
    segments = tuple(path[5:].split("."))
    if len(segments) == 1:
        key = segments[0]
        return lambda a: a.get(key, MISSING)

    def get(a: Mapping[str, Any]) -> Any:
        cur: Any = a
        for seg in segments:
            if isinstance(cur, Mapping):
                cur = cur.get(seg, MISSING)
            elif isinstance(cur, (list, tuple)) and seg.isdigit():
                idx = int(seg)
                cur = cur[idx] if idx < len(cur) else MISSING
            else:
                return MISSING
            if cur is MISSING:
                return MISSING
        return cur

    return get


def _getter(path: str) -> Callable[[Mapping[str, Any], str | None, str | None, str | None, str], Any]:
    if path == "identity":
        return lambda a, i, s, v, t: MISSING if i is None else i
    if path == "session":
        return lambda a, i, s, v, t: MISSING if s is None else s
    if path == "server":
        return lambda a, i, s, v, t: MISSING if v is None else v
    if path == "tool":
        return lambda a, i, s, v, t: t
    read = args_getter(path)
    return lambda a, i, s, v, t: read(a)


def _operator(op: str, expected: Any) -> Callable[[Any], object]:
    """value -> True / False / _MISMATCH, for a present value."""
    if op == "eq":
        return lambda v: json_equal(v, expected)
    if op == "neq":
        return lambda v: not json_equal(v, expected)
    if op in ("in", "not_in"):
        options = tuple(expected)
        want = op == "in"
        return lambda v: any(json_equal(v, o) for o in options) is want
    if op in _NUMERIC:
        bound = expected
        compare = _COMPARE[op]

        def numeric(v: Any) -> object:
            return compare(v, bound) if _is_number(v) else _MISMATCH

        return numeric
    if op == "regex":
        search = re.compile(expected).search
        return lambda v: (search(v) is not None) if isinstance(v, str) else _MISMATCH
    if op == "glob":
        glob_match = re.compile(fnmatch.translate(expected)).match  # fnmatchcase semantics, compiled once
        return lambda v: (glob_match(v) is not None) if isinstance(v, str) else _MISMATCH

    # contains: substring for strings, membership for lists
    def contains(v: Any) -> object:
        if isinstance(v, str):
            return (expected in v) if isinstance(expected, str) else _MISMATCH
        if isinstance(v, (list, tuple)):
            return any(json_equal(x, expected) for x in v)
        return _MISMATCH

    return contains


def _need(op: str) -> str:
    if op in _NUMERIC:
        return "a number"
    if op in ("regex", "glob"):
        return "a string"
    return "a string or a list"


def compile_check(path: str, op: str, expected: Any, kind: Kind, redacted: bool = False) -> Check:
    """One (path, operator) check as a closure returning ``None`` or the reason it fails (require) / fires."""
    get = _getter(path)
    exp = show_value(expected)
    if op == "exists":
        want = bool(expected)

        def exists(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
            present = get(a, i, s, v, t) is not MISSING
            holds = present is want
            if kind == "require":
                if holds:
                    return None
                return f"{path} is required but missing" if want else f"{path} must not be given"
            if not holds:
                return None
            return f"{kind} {path} {'exists' if want else 'is missing'}"

        return exists

    test = _operator(op, expected)
    sym = _SYMBOL[op]
    neg = _NEGATED[op]
    if kind == "require":

        def require(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
            value = get(a, i, s, v, t)
            if value is MISSING:
                return f"{path} is missing (required: {sym} {exp})"
            result = test(value)
            if result is True:
                return None
            if result is _MISMATCH:
                return (
                    f"{path} is {show_value(value, redacted)} ({_type_name(value)}), which has the wrong type: "
                    f"{sym} {exp} needs {_need(op)}"
                )
            return f"{path} is {show_value(value, redacted)}, which {neg} {exp}"

        return require

    def fires(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
        value = get(a, i, s, v, t)
        if value is MISSING:
            return None
        result = test(value)
        if result is False:
            return None
        if result is _MISMATCH:
            return (
                f"{kind} {path} {sym} {exp}: the value has the wrong type "
                f"(got {_type_name(value)}, need {_need(op)}), so the check counts as firing"
            )
        return f"{kind} {path} {sym} {exp} (got {show_value(value, redacted)})"

    if op in _NUMERIC and path.startswith("args.") and "." not in path[5:]:
        # The hot shape (deny_if args.amount > N): one dict lookup and one comparison when nothing fires.
        key = path[5:]
        compare = _COMPARE[op]
        bound = expected

        def fires_numeric(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
            value = a.get(key, MISSING)
            tv = type(value)
            if (tv is int or (tv is float and value == value)) and not compare(value, bound):
                return None
            return fires(a, i, s, v, t)

        return fires_numeric

    return fires


def compile_conditions(
    block: Mapping[str, Mapping[str, Any]],
    kind: Kind,
    base_pointer: str,
    redacted_keys: frozenset[str] = frozenset(),
) -> tuple[tuple[str, Check], ...]:
    """Every (path, op) of a validated block as ``(rule pointer, check)``, in the block's order."""
    from mcp_guard._matching import pointer_escape

    out: list[tuple[str, Check]] = []
    for path, ops in block.items():
        top = path[5:].split(".")[0] if path.startswith("args.") else None
        redacted = top is not None and top in redacted_keys
        for op, expected in ops.items():
            ptr = f"{base_pointer}/{pointer_escape(path)}-{op}"
            out.append((ptr, compile_check(path, op, expected, kind, redacted)))
    return tuple(out)
