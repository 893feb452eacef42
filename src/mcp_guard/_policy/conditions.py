"""Conditions (``require``, ``deny_if``, ``approve_if``): validated and compiled once, at load.

A condition block maps a path to operators: ``{"args.amount": {"gt": 1000}, "identity": {"in": [...]}}``.
Each (path, operator) pair becomes one small closure, named by its own rule pointer
(``/tools/x/deny_if/args.amount-gt``), that returns ``None`` when the check passes and a reason when it does
not (``require``) or when it fires (``deny_if``, ``approve_if``).

Types are compared exactly, as JSON has them (spec section 8), because the tool may coerce what the policy
did not: ``"true"`` is not ``true``, ``1`` is not ``true``, ``"100"`` is not ``100``, a boolean is never a
number (``1`` and ``1.0`` are the same number).

* A path that is simply absent makes every comparison false (so ``require`` fails and ``deny_if`` does not
  fire), except ``exists: false``, which holds.
* A path that reads the caller (``identity``, ``claims.*``, ``context.*``) and finds nothing refuses the call
  with code ``identity_required``, whatever the operator (see :mod:`mcp_guard._policy.caller`).
* A value whose JSON type does not fit the check (``gt`` against a string, ``eq: true`` against ``"true"``,
  ``in: [50, 100]`` against ``"100"``, NaN or Infinity against anything), or a path that runs through
  something that is not an object (``args.order.qty`` when ``order`` is a JSON string), resolves to the
  strict side: it fails ``require`` and fires ``deny_if`` and ``approve_if``. An argument the model shapes
  oddly must never slip past a check.

Reasons name the check and, at most, the JSON type of the value: never the value itself, which may be a
secret. So a check's reasons are a small fixed set, which lets the policy build each refusal once.

``regex`` runs on RE2 (``google-re2``): matching is linear in the argument's length whatever the pattern,
and a pattern RE2 cannot take (backreferences, lookaround) is refused at load. ``glob`` uses the same rule
as tool patterns: only ``*`` is a wildcard.
"""

from __future__ import annotations

import json
import math
import operator
import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final, Literal

from mcp_guard._policy.caller import CallerMissing, caller_getter, check_caller_path, reads_caller, reads_caller_object
from mcp_guard._policy.matching import glob_matcher, parse_pattern, pointer_escape
from mcp_guard._policy.session import EMPTY_VIEW, SessionView, leaves, secret_in
from mcp_guard._policy.suggest import did_you_mean

OPERATORS: Final = (
    "eq",
    "neq",
    "in",
    "not_in",
    "lt",
    "lte",
    "gt",
    "gte",
    "regex",
    "glob",
    "contains",
    "exists",
    "not_regex",
    "not_glob",
    "not_contains",
    "any",
    "all",
    "from",
    "not_from",
    "detect",
    "no_secrets",
)
CONTEXT_PATHS: Final = ("identity", "session", "server", "tool")
#: What the session has done (read from the session view): names of tools that ran, their classes, whether an
#: untrusted result was seen, how many calls ran.
SESSION_PATHS: Final = ("session.tools", "session.classes", "session.untrusted", "session.calls")
#: Operators that read the session view (provenance, remembered secrets).
VIEW_OPS: Final = frozenset({"from", "not_from", "no_secrets"})
Kind = Literal["require", "deny_if", "approve_if", "result"]

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
    "not_regex": "does not match regex",
    "not_glob": "does not match glob",
    "not_contains": "does not contain",
    "any": "has an element that satisfies",
    "all": "has only elements that satisfy",
    "from": "comes from",
    "not_from": "does not come from",
    "detect": "holds what a detector flags:",
    "no_secrets": "holds no remembered secret:",
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
    "not_regex": "matches regex",
    "not_glob": "matches glob",
    "not_contains": "contains",
    "any": "has no element that satisfies",
    "all": "has an element that does not satisfy",
    "from": "does not come from",
    "not_from": "comes from",
    "detect": "holds nothing a detector flags:",
    "no_secrets": "holds a secret this session saw:",
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


class _Through:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<path runs through a non-object>"


MISSING: Final = _Missing()
#: What a path reader returns when the path runs through a value that is not an object (a string, a number,
#: a list indexed by a name): the strict side, unlike a simply absent path.
THROUGH: Final = _Through()
# Returned by an operator when the value has the wrong type for it.
_MISMATCH: Final = object()

# A compiled check: (args, identity, session, server, tool) -> None, or the reason it fails / fires.
Check = Callable[[Mapping[str, Any], "str | None", "str | None", "str | None", str], "str | None"]


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python but never a number in a policy; NaN and Infinity are not JSON numbers
    # (NaN compares false with everything, so letting it through would let "amount": NaN pass amount > 1000).
    t = type(value)
    if t is int:
        return True
    if t is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int subclass too large for a float is still a finite number
        return True


def json_type(value: object) -> str | None:
    """The JSON Schema type name of a value (``null boolean integer number string object array``), else ``None``.

    A plain reading: NaN is a ``number`` here. :func:`json_kind` is the strict one the checks use; the audit
    describes arguments with this one.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return None


def json_kind(value: object) -> str | None:
    """The JSON type of a value (``null boolean number string object array``), ``None`` when it has none.

    NaN and ±Infinity have none (JSON has no such numbers), so every check treats them as a type mismatch.
    """
    kind = json_type(value)
    if kind == "integer" or kind == "number":
        return "number" if _is_number(value) else None
    return kind


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``, ``"1"`` is not ``1``, and ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (Mapping, list, tuple)) or isinstance(b, (Mapping, list, tuple)):
        return False
    try:
        return bool(a == b)
    except Exception:  # an argument object with a hostile __eq__ is simply not equal
        return False


def describe_type(value: object) -> str:
    """What a reason may say about a value: its JSON type in words (``a number``), never the value itself."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN (not a number)" if math.isnan(value) else "Infinity (not a finite number)"
    kind = json_type(value)
    if kind is None:
        return f"a {type(value).__name__}"
    return _KIND_TEXT["number" if kind == "integer" else kind]


_KIND_TEXT = {
    "null": "null",
    "boolean": "a boolean",
    "number": "a number",
    "string": "a string",
    "object": "an object",
    "array": "a list",
}


def show_value(value: object, redacted: bool = False) -> str:
    """A policy value for a reason: ``repr`` for strings and numbers, JSON otherwise, cut to 80 characters.

    Only for values written in the policy: a reason never quotes an argument's value (it may be a secret).
    """
    if redacted:
        return "[redacted]"
    try:
        simple = type(value) in (int, float) or isinstance(value, str)
        text = repr(value) if simple else _json_text(value)
    except ValueError:  # an int too long to print (Python limits int -> str conversion)
        text = f"<{describe_type(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


# -- validation (load time) -----------------------------------------------------------------------------


def check_path(path: object, where: str = "call") -> str | None:
    """Why ``path`` is not a condition path, or ``None``. ``where``: ``"call"`` (a rule's conditions, about the
    call and the session) or ``"result"`` (a rule's ``result`` block, about what the tool returned)."""
    if not isinstance(path, str):
        return f"a condition path must be a string, got {describe_type(path)}"
    if where == "result":
        if path == "result.text" or (path.startswith("result.json.") and all(path[12:].split("."))):
            return None
        return f"{path!r} is not a result path; allowed: result.text, result.json.<name>[.<name>...]"
    if path in CONTEXT_PATHS or path in SESSION_PATHS:
        return None
    if path.startswith("args.") and all(path[5:].split(".")):
        return None
    if check_caller_path(path):
        return None
    return (
        f"{path!r} is not a condition path; allowed: args.<name>[.<name>...], identity, session, server, tool, "
        "claims.<name>[.<name>...], context.<name>[.<name>...], " + ", ".join(SESSION_PATHS)
    )


def check_source(source: object) -> str | None:
    """Why ``source`` cannot be named in ``from`` / ``not_from``, or ``None``."""
    from mcp_guard._policy.matching import check_pattern
    from mcp_guard._policy.session import SOURCES

    if isinstance(source, str) and source in SOURCES:
        return None
    why = check_pattern(source)  # type: ignore[arg-type]  # it takes anything and says why a non-string is wrong
    return f"{why}; a source is user, trusted, untrusted or a tool pattern" if why else None


def check_operator(op: str, value: object, depth: int = 0) -> str | None:
    """Why ``{op: value}`` is not a valid check, or ``None``."""
    if op not in OPERATORS:
        return f"unknown operator {op!r}{did_you_mean(str(op), OPERATORS)}; allowed: {', '.join(OPERATORS)}"
    if op in ("in", "not_in") and not isinstance(value, list):
        return f"{op!r} needs a list of values, got {describe_type(value)}"
    if op in _NUMERIC and not _is_number(value):
        return f"{op!r} compares numbers and needs a number, got {describe_type(value)}"
    if op in ("regex", "glob", "not_regex", "not_glob") and not isinstance(value, str):
        return f"{op!r} needs a string pattern, got {describe_type(value)}"
    if op in ("regex", "not_regex"):
        why = regex_problem(str(value))
        if why:
            return why
    if op == "exists" and not isinstance(value, bool):
        return f"'exists' needs true or false, got {describe_type(value)}"
    if op in ("contains", "not_contains") and (isinstance(value, (Mapping, list)) or value is None):
        return f"{op!r} needs a string, number or boolean, got {describe_type(value)}"
    if op in ("any", "all"):
        return _check_inner(op, value, depth)
    if op in ("from", "not_from"):
        if not isinstance(value, list) or not value:
            return f"{op!r} needs a non-empty list of sources (user, trusted, untrusted, tool patterns)"
        for source in value:
            why = check_source(source)
            if why:
                return f"{op!r}: {why}"
    if op == "detect":
        from mcp_guard._policy.detectors import DETECTORS

        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            return f"'detect' needs a non-empty list of detector names ({', '.join(DETECTORS)})"
        unknown = [v for v in value if v not in DETECTORS]
        if unknown:
            return f"unknown detector {unknown[0]!r}; allowed: {', '.join(DETECTORS)}"
    if op == "no_secrets" and value is not True:
        return "'no_secrets' takes true (leave it out for no check)"
    return None


def _check_inner(op: str, value: object, depth: int) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return f"{op!r} needs a condition for each element, e.g. {{'{op}': {{'glob': '*@example.com'}}}}"
    if depth >= 4:
        return f"{op!r} is nested too deeply (at most 4 levels)"
    for inner, expected in value.items():
        if inner in ("exists", "no_secrets"):
            return f"{op!r}: {inner!r} does not apply to list elements"
        why = check_operator(str(inner), expected, depth + 1)
        if why:
            return f"{op!r}: {why}"
    return None


def validate_conditions(block: object, where: str = "call") -> list[tuple[tuple[str, ...], str]]:
    """Problems in a condition block, as (relative path tokens, message); empty when valid."""
    if not isinstance(block, Mapping):
        return [((), f"conditions must be a mapping of path to operators, got {describe_type(block)}")]
    problems: list[tuple[tuple[str, ...], str]] = []
    for path, ops in block.items():
        why = check_path(path, where)
        if why:
            problems.append(((str(path),), why))
            continue
        if not isinstance(ops, Mapping):
            problems.append(
                ((path,), f"expected a mapping of operator to value (e.g. {{'gt': 100}}), got {describe_type(ops)}")
            )
            continue
        if not ops:
            problems.append(((path,), f"no operator given; allowed: {', '.join(OPERATORS)}"))
        for op, value in ops.items():
            why = check_operator(str(op), value)
            if why is None and where == "result" and op in VIEW_OPS:
                why = f"{op!r} is about a call's arguments, not a result"
            if why is None and op in VIEW_OPS and not path.startswith("args."):
                why = f"{op!r} applies to argument paths (args.<name>) only"
            if why:
                problems.append(((path, str(op)), why))
    return problems


@lru_cache(maxsize=1)
def _re2() -> Any:
    import re2  # type: ignore[import-untyped]  # google-re2, a core dependency; imported on first use

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return re2, options


def regex_problem(pattern: str) -> str | None:
    """Why RE2 cannot take ``pattern`` (backreferences, lookaround, bad syntax), or ``None``."""
    re2, options = _re2()
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return (
            f"invalid regular expression {show_value(pattern)}: {detail} (regex conditions run on RE2, in linear "
            "time: no backreferences or lookaround)"
        )
    return None


def compile_regex(pattern: str) -> Callable[[str], bool]:
    """``text -> bool``: whether RE2 finds ``pattern`` anywhere in ``text`` (like ``re.search``)."""
    re2, options = _re2()
    search = re2.compile(pattern, options).search
    return lambda text: search(text) is not None


# -- compilation ----------------------------------------------------------------------------------------


def args_getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A reader for an ``args.a.b`` path: digit segments index lists.

    Gives the value, ``MISSING`` when a key or index is absent (or a ``null`` stands on the way), or
    ``THROUGH`` when the path runs through a value that cannot hold the next segment (a string, a number,
    a bool, a list indexed by a name).
    """
    segments = tuple(path[5:].split("."))
    if len(segments) == 1:
        key = segments[0]

        def get_one(a: Mapping[str, Any]) -> Any:
            value = a.get(key, MISSING)
            return MISSING if value is None else value  # an explicit null is absent (spec section 11)

        return get_one

    def get(a: Mapping[str, Any]) -> Any:
        cur: Any = a
        for seg in segments:
            if isinstance(cur, Mapping):
                cur = cur.get(seg, MISSING)
            elif isinstance(cur, (list, tuple)) and seg.isdigit():
                idx = int(seg)
                cur = cur[idx] if idx < len(cur) else MISSING
            elif cur is None:
                # null on the way is an optional object left out (what a pydantic tool fills in for a
                # default of None): absent, not a disguised value. The tool cannot read a qty from it either.
                return MISSING
            else:
                return THROUGH
            if cur is MISSING:
                return MISSING
        return MISSING if cur is None else cur  # an explicit null is absent

    return get


def _value_reader(path: str) -> Callable[[Mapping[str, Any], str | None, str | None, str | None, str], Any]:
    if path == "identity":
        return lambda a, i, s, v, t: MISSING if i is None else i
    if path == "session":
        return lambda a, i, s, v, t: MISSING if s is None else s
    if path == "server":
        return lambda a, i, s, v, t: MISSING if v is None else v
    if path == "tool":
        return lambda a, i, s, v, t: t
    if reads_caller_object(path):
        # Caller checks are given the caller view (``{"context": ..., "claims": ...}``) in place of the args.
        read = caller_getter(path, MISSING, THROUGH)
        return lambda a, i, s, v, t: read(a)
    read = args_getter(path)
    return lambda a, i, s, v, t: read(a)


def _kinds_of(op: str, expected: object) -> frozenset[str]:
    """The JSON types a value may have for ``{op: expected}`` to be a fair comparison (empty: any)."""
    if op in ("eq", "neq"):
        kind = json_kind(expected)
        return frozenset({kind}) if kind else frozenset()
    if op in ("in", "not_in"):
        return frozenset(k for k in map(json_kind, typing.cast(list[object], expected)) if k)
    if op in _NUMERIC:
        return frozenset({"number"})
    if op in ("regex", "glob", "not_regex", "not_glob", "detect"):
        return frozenset({"string"})
    return frozenset()


def _comparison(op: str, expected: object) -> Callable[[Any], object]:
    """value -> True / False / _MISMATCH, for a present value."""
    kinds = _kinds_of(op, expected)
    if op in ("eq", "neq", "in", "not_in"):
        if op in ("eq", "neq"):
            options: tuple[object, ...] = (expected,)
            want = op == "eq"
        else:
            options = tuple(typing.cast(list[object], expected))  # validated: 'in' takes a list
            want = op == "in"

        def equality(v: Any) -> object:
            if kinds and json_kind(v) not in kinds:
                return _MISMATCH
            return any(json_equal(v, o) for o in options) is want

        return equality
    if op in _NUMERIC:
        bound = expected
        compare = _COMPARE[op]

        def numeric(v: Any) -> object:
            return compare(v, bound) if _is_number(v) else _MISMATCH

        return numeric
    if op == "regex":
        search = compile_regex(str(expected))
        return lambda v: search(v) if isinstance(v, str) else _MISMATCH
    if op == "glob":
        glob_match = glob_matcher(str(expected))
        return lambda v: glob_match(v) if isinstance(v, str) else _MISMATCH

    if op in ("not_regex", "not_glob", "not_contains"):
        positive = _comparison(op[4:], expected)

        def negated(v: Any) -> object:
            result = positive(v)
            return result if result is _MISMATCH else not result

        return negated
    if op == "detect":
        names = tuple(typing.cast(list[str], expected))

        def detected(v: Any) -> object:
            from mcp_guard._policy.detectors import detect

            if not isinstance(v, str):
                return _MISMATCH
            found = detect(v, names)
            return _MISMATCH if not found.complete else bool(found.spans)

        return detected

    # contains: substring for strings, membership for lists
    def contains(v: Any) -> object:
        if isinstance(v, str):
            return (expected in v) if isinstance(expected, str) else _MISMATCH
        if isinstance(v, (list, tuple)):
            return any(json_equal(x, expected) for x in v)
        return _MISMATCH

    return contains


def _wanted_types(op: str, expected: object) -> str:
    if op in ("any", "all"):
        return "a list"
    if op in ("contains", "not_contains"):
        return "a string or a list"
    kinds = sorted(_kinds_of(op, expected))
    return " or ".join(_KIND_TEXT[k] for k in kinds) if kinds else "a JSON value"


class _Reasons:
    """Every reason one check can give, built once: the check, never the argument's value."""

    __slots__ = ("_mismatch", "_wrong", "missing", "refused", "through")

    def __init__(self, refused: str, through: str, missing: str | None, wrong: Callable[[str], str]) -> None:
        self.refused = refused  # the comparison went against the call: require does not hold, deny_if holds
        self.through = through
        self.missing = missing
        self._wrong = wrong
        self._mismatch: dict[str, str] = {}

    def mismatch(self, value: object) -> str:
        name = describe_type(value)
        text = self._mismatch.get(name)
        if text is None:
            text = self._wrong(name)
            if len(self._mismatch) < 32:  # type names are a small fixed set; the bound is belt and braces
                self._mismatch[name] = text
        return text


def compile_check(path: str, op: str, expected: object, kind: Kind) -> Check:
    """One (path, operator) check as a closure returning ``None`` or the reason it fails (require) / fires."""
    get = _value_reader(path)
    exp = show_value(expected)
    side = "fails" if kind == "require" else "counts as firing"
    through = (
        f"{kind} {path}: part of the path is not an object, so the value cannot be read and the check {side}"
        if kind != "require"
        else f"{path} cannot be read: part of the path is not an object (required: "
        + (f"{'present' if expected else 'absent'})" if op == "exists" else f"{_SYMBOL[op]} {exp})")
    )
    if op == "exists":
        want = bool(expected)
        if kind == "require":
            absent = f"{path} is required but missing" if want else f"{path} must not be given"
        else:
            absent = f"{kind} {path} {'exists' if want else 'is missing'}"
        # A refusal for a missing caller value says so (identity_required); an approve_if asks as written.
        unknown = CallerMissing(absent) if reads_caller(path) and kind != "approve_if" else absent

        def exists(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
            value = get(a, i, s, v, t)
            if value is THROUGH:
                return through
            holds = (value is not MISSING) is want
            if holds is (kind == "require"):
                return None
            return unknown if value is MISSING else absent

        return exists

    if op in ("any", "all"):
        each = value_test(op, expected)
        test: Callable[[Any], object] = lambda v: each(v, EMPTY_VIEW)  # noqa: E731  # no inner op reads the session
    else:
        test = _comparison(op, expected)
    sym = _SYMBOL[op]
    neg = _NEGATED[op]
    need = _wanted_types(op, expected)
    if kind == "require":
        reasons = _Reasons(
            refused=f"{path} {neg} {exp}",
            through=through,
            missing=f"{path} is missing (required: {sym} {exp})",
            wrong=lambda name: f"{path} has the wrong type: {sym} {exp} needs {need}, got {name}",
        )
        passes: object = True  # the comparison's result that lets the call through
    else:
        reasons = _Reasons(
            refused=f"{kind} {path} {sym} {exp}",
            through=through,
            missing=None,  # an absent value never fires
            wrong=lambda name: (
                f"{kind} {path} {sym} {exp}: the value has the wrong type (got {name}, need {need}), "
                "so the check counts as firing"
            ),
        )
        passes = False
    if reads_caller(path):
        # Without the caller's value no operator can decide, and an unknown caller is never waved through.
        reasons.missing = CallerMissing(
            f"{path} is missing (required: {sym} {exp})"
            if kind == "require"
            else f"{kind} {path} {sym} {exp} cannot be decided: {path} is missing"
        )

    def check(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
        value = get(a, i, s, v, t)
        if value is MISSING:
            return reasons.missing
        if value is THROUGH:
            return reasons.through
        result = test(value)
        if result is passes:
            return None
        if result is _MISMATCH:
            return reasons.mismatch(value)
        return reasons.refused

    if kind != "require" and op in _NUMERIC and path.startswith("args.") and "." not in path[5:]:
        # The hot shape (deny_if args.amount > N): one dict lookup and one comparison when nothing fires.
        key = path[5:]
        compare = _COMPARE[op]
        bound = expected
        holds = reasons.refused
        isfinite = math.isfinite

        def fires_numeric(a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str) -> str | None:
            value = a.get(key, MISSING)
            tv = type(value)
            if tv is int:
                return holds if compare(value, bound) else None
            if tv is float and isfinite(value):
                return holds if compare(value, bound) else None
            return check(a, i, s, v, t)

        return fires_numeric

    return check


# -- checks that read the session view ---------------------------------------------------------------------

# A compiled check that reads the session too: (args, identity, session, server, tool, view) -> None or reason.
ViewCheck = Callable[[Mapping[str, Any], "str | None", "str | None", "str | None", str, SessionView], "str | None"]
#: A value test with the session: (value, view) -> True / False / a type mismatch.
ValueTest = Callable[[Any, SessionView], object]


def uses_view(path: str, op: str, expected: object) -> bool:
    """Whether the check ``{path: {op: expected}}`` reads the session view."""
    if path.startswith("session.") or op in VIEW_OPS:
        return True
    if op in ("any", "all") and isinstance(expected, Mapping):
        return any(uses_view("", str(k), v) for k, v in expected.items())
    return False


def is_mismatch(result: object) -> bool:
    """A value test's answer meaning: the value has the wrong type for the check (the strict side)."""
    return result is _MISMATCH


def _source_test(sources: list[str]) -> Callable[[Any, SessionView], tuple[bool, Any]]:
    """(value, view) -> (every leaf appears in one of the sources, the first leaf that does not)."""
    named: list[tuple[str, Callable[[str, str | None], bool] | None]] = []
    for source in sources:
        if source in ("user", "trusted", "untrusted"):
            named.append((source, None))
        else:
            pattern = parse_pattern(source)
            named.append((f"tool:{source}", pattern.matches))

    def test(value: Any, view: SessionView) -> tuple[bool, Any]:
        for leaf in leaves(value):
            if not any(view.source(name, match).has(leaf) for name, match in named):
                return False, leaf
        return True, None

    return test


def value_test(op: str, expected: object) -> ValueTest:
    """``{op: expected}`` as a test of one present value with the session view."""
    if op in ("from", "not_from"):
        test = _source_test(typing.cast(list[str], expected))
        want = op == "from"
        return lambda v, view: test(v, view)[0] is want
    if op == "no_secrets":

        def clean(v: Any, view: SessionView) -> object:
            text = " ".join(str(leaf) for leaf in leaves(v))
            return not secret_in(text, view)

        return clean
    if op in ("any", "all"):
        inner = [value_test(str(k), e) for k, e in typing.cast(Mapping[str, object], expected).items()]
        every = op == "all"

        def each(v: Any, view: SessionView) -> object:
            if not isinstance(v, (list, tuple)):
                return _MISMATCH
            verdicts = []
            for element in v:
                results = [t(element, view) for t in inner]
                if any(r is _MISMATCH for r in results):
                    return _MISMATCH  # a wrong-typed element puts the whole check on the strict side
                verdicts.append(all(results))
            return all(verdicts) if every else any(verdicts)

        return each
    plain = _comparison(op, expected)
    return lambda v, view: plain(v)


def _view_reader(path: str) -> Callable[[Mapping[str, Any], str | None, str | None, str | None, str, SessionView], Any]:
    if path == "session.tools":
        return lambda a, i, s, v, t, view: list(view.tools)
    if path == "session.classes":
        return lambda a, i, s, v, t, view: list(view.classes)
    if path == "session.untrusted":
        return lambda a, i, s, v, t, view: view.untrusted
    if path == "session.calls":
        return lambda a, i, s, v, t, view: view.calls
    read = _value_reader(path)
    return lambda a, i, s, v, t, view: read(a, i, s, v, t)


def compile_view_check(path: str, op: str, expected: object, kind: Kind) -> ViewCheck:
    """A check that reads the session view: provenance (``from``/``not_from``), ``no_secrets``, ``session.*``
    paths, or ``any``/``all`` around one of those. Same rules as :func:`compile_check` for absent and
    wrong-typed values. A provenance refusal names, where known, the tool whose untrusted result holds the
    value; never the value."""
    get = _view_reader(path)
    test = value_test(op, expected)
    exp = show_value(expected)
    sym, neg = _SYMBOL[op], _NEGATED[op]
    need = _wanted_types(op, expected)
    sources = _source_test(typing.cast(list[str], expected)) if op in ("from", "not_from") else None
    absent_has_no_leaves = op in VIEW_OPS
    if op == "no_secrets":
        # A secret held, in words (the value is never quoted; nor, here, even the kind of secret).
        refused = f"{path} holds a secret this session saw in a tool result; it may not leave"
        return _no_secrets_check(get, test, refused)
    if kind == "require":
        refused, missing = f"{path} {neg} {exp}", f"{path} is missing (required: {sym} {exp})"
        through = f"{path} cannot be read: part of the path is not an object (required: {sym} {exp})"
        wrong = f"{path} has the wrong type: {sym} {exp} needs {need}"
        passes: object = True
    else:
        refused, missing = f"{kind} {path} {sym} {exp}", None
        through = f"{kind} {path}: part of the path is not an object, so the value cannot be read and the check fires"
        wrong = f"{kind} {path} {sym} {exp}: the value has the wrong type (need {need}), so the check counts as firing"
        passes = False

    def check(
        a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str, view: SessionView
    ) -> str | None:
        value = get(a, i, s, v, t, view)
        if value is MISSING and absent_has_no_leaves:
            value = ()  # nothing given, nothing that could come from elsewhere or carry a secret
        if value is MISSING:
            return missing
        if value is THROUGH:
            return through
        result = test(value, view)
        if result is passes:
            return None
        if result is _MISMATCH:
            return wrong
        if sources is not None:
            _, stray = sources(value, view)
            if stray is None:  # not_from refusing: every leaf came from the sources
                return refused
            came = view.tool_with(stray)
            return refused + (f" (it appears in a result of {came}, an untrusted source)" if came else "")
        return refused

    return check


def _no_secrets_check(
    get: Callable[[Mapping[str, Any], str | None, str | None, str | None, str, SessionView], Any],
    test: ValueTest,
    refused: str,
) -> ViewCheck:
    """``no_secrets`` (only in ``require``): refuses when the value holds a remembered secret; an absent value or a
    path through a non-object holds nothing to leak, and any JSON value is read (no type is wrong here)."""

    def check(
        a: Mapping[str, Any], i: str | None, s: str | None, v: str | None, t: str, view: SessionView
    ) -> str | None:
        value = get(a, i, s, v, t, view)
        if value is MISSING or value is THROUGH:
            return None
        return None if test(value, view) else refused

    return check


def compile_view_conditions(
    block: Mapping[str, Mapping[str, object]], kind: Kind, base_pointer: str
) -> tuple[tuple[str, ViewCheck, str | None], ...]:
    """The checks of a validated block that read the session view, as ``(rule pointer, check, code)``.

    ``code``: ``untrusted_argument`` for provenance, ``secret_egress`` for ``no_secrets``, else None (the
    block's own code)."""
    out: list[tuple[str, ViewCheck, str | None]] = []
    for path, ops in block.items():
        for op, expected in ops.items():
            if not uses_view(path, op, expected):
                continue
            ptr = f"{base_pointer}/{pointer_escape(path)}-{op}"
            code = (
                "secret_egress" if op == "no_secrets" else "untrusted_argument" if _provenance(op, expected) else None
            )
            out.append((ptr, compile_view_check(path, op, expected, kind), code))
    return tuple(out)


def _provenance(op: str, expected: object) -> bool:
    if op in ("from", "not_from"):
        return True
    if op in ("any", "all") and isinstance(expected, Mapping):
        return any(_provenance(str(k), v) for k, v in expected.items())
    return False


def compile_conditions(
    block: Mapping[str, Mapping[str, object]], kind: Kind, base_pointer: str
) -> tuple[tuple[str, Check], ...]:
    """Every (path, op) of a validated block as ``(rule pointer, check)``, in the block's order."""

    out: list[tuple[str, Check]] = []
    for path, ops in block.items():
        for op, expected in ops.items():
            if uses_view(path, op, expected):
                continue  # compiled by compile_view_conditions
            ptr = f"{base_pointer}/{pointer_escape(path)}-{op}"
            out.append((ptr, compile_check(path, op, expected, kind)))
    return tuple(out)
