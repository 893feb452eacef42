"""Checks on the raw arguments a model sent, before the policy looks at them (spec section 8).

Two checks close the gap between what the guard judges and what the tool runs with:

- :func:`non_finite_path`: NaN and ±Infinity are not JSON; a tool may still receive them from Python
  callers, and every comparison with NaN is false, so ``deny_if {amount: {gt: 100}}`` would never fire.
- :func:`tool_schema_error`: the tool's own declared input schema (MCP ``inputSchema``, a LangChain
  tool's args schema), checked with no type coercion. A server built on pydantic would turn ``"true"`` into
  ``True`` or a JSON string into an object; refusing what does not already have the declared type means the
  tool never receives a value the policy did not see.

Both walk iteratively (arguments nested 10,000 deep do not hit the recursion limit) and never raise.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("mcp_guard")

Validator = Callable[[Any], "str | None"]

_CACHE_SIZE = 1024
_cache: OrderedDict[int, tuple[object, Validator]] = OrderedDict()
_lock = threading.Lock()


def _path_text(parts: list[Any]) -> str:
    return "args" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _linked_path_text(link: Any) -> str:
    parts: list[Any] = []
    while link is not None:  # (key, parent) links, innermost first
        parts.append(link[0])
        link = link[1]
    return _path_text(parts[::-1])


_LEAVES = frozenset((str, int, bool, type(None)))
"""Types that can hold no float: an argument of one of these exactly needs no look inside."""


def non_finite_path(args: Any) -> str | None:
    """The path of the first NaN or ±Infinity in ``args`` (``"args.order.qty"``), or None when all are finite.

    Paths are kept as (key, parent) links and spelled out only for a hit: copying a list per level made an
    argument nested 10,000 deep cost seconds (quadratic).
    """
    if type(args) is dict:  # the common case, flat arguments of leaf types: no stack at all
        for item in args.values():
            if type(item) not in _LEAVES:
                break
        else:
            return None
    stack: list[tuple[Any, Any]] = [(args, None)]
    while stack:
        value, path = stack.pop()
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return _linked_path_text(path)
        elif kind is dict or isinstance(value, Mapping):
            for key, item in value.items():
                if type(item) in (str, int, bool) or item is None:
                    continue  # the common leaves, without a stack entry each
                stack.append((item, (key, path)))
        elif kind is list or kind is tuple:
            for index, item in enumerate(value):
                if type(item) in (str, int, bool) or item is None:
                    continue
                stack.append((item, (index, path)))
        elif isinstance(value, float) and not math.isfinite(value):  # float subclasses (numpy scalars)
            return _linked_path_text(path)
    return None


def _schema_dict(schema: Any) -> Mapping[str, Any] | None:
    """A JSON Schema dict from a dict, a pydantic model class, or None when there is nothing usable."""
    if isinstance(schema, Mapping):
        return schema
    to_schema = getattr(schema, "model_json_schema", None)
    if callable(to_schema):
        result = to_schema()
        return result if isinstance(result, Mapping) else None
    return None


def _compile(schema: Mapping[str, Any]) -> Validator:
    """A strict validator for ``schema``: fastjsonschema (no defaults filled in), else jsonschema's latest draft."""
    import fastjsonschema

    try:
        fast = fastjsonschema.compile(dict(schema), use_default=False, use_formats=False)
    except Exception:  # a draft or keyword fastjsonschema cannot compile: the slower validator knows more
        fast = None
    if fast is not None:
        compiled = fast

        def check_fast(args: Any) -> str | None:
            try:
                compiled(args)
            except fastjsonschema.JsonSchemaValueException as exc:
                path = [p for p in (exc.path or [])[1:]]
                expected = exc.definition.get(exc.rule) if isinstance(exc.definition, Mapping) else None
                return _describe(path, exc.rule, expected, exc.message)
            except RecursionError:
                return "the arguments are nested too deeply to check"
            return None

        return check_fast

    import jsonschema  # type: ignore[import-untyped]

    cls = jsonschema.validators.validator_for(dict(schema), default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(dict(schema))
        validator = cls(dict(schema))
    except Exception as exc:
        problem = f"the tool's input schema cannot be used ({type(exc).__name__})"

        def refuse(args: Any) -> str | None:
            # Fail closed: a schema we cannot check means we cannot tell what the tool will run with.
            return problem

        log.warning("tool input schema does not compile; calls to this tool are refused: %s", exc)
        return refuse

    def check_slow(args: Any) -> str | None:
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        except RecursionError:
            return "the arguments are nested too deeply to check"
        if error is None:
            return None
        expected = error.validator_value if error.validator == "type" else None
        return _describe(list(error.absolute_path), str(error.validator), expected, error.message)

    return check_slow


def _describe(path: list[Any], rule: str | None, expected: Any, message: str) -> str:
    where = _path_text(path)
    if rule == "type":
        want = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return f"{where} must be of type {want} (no conversion is made)"
    # The validator's message can quote the offending value; say only where and which keyword failed, so
    # an argument (maybe a secret) is never echoed back into reasons and audit events.
    return f"{where} does not satisfy the tool's input schema ({rule or 'schema'})"


def tool_schema_error(schema: Any, args: Any) -> str | None:
    """Why ``args`` do not fit the tool's declared input schema (strict types), or None when they fit.

    ``schema`` is a JSON Schema dict or a pydantic model class; validators are compiled once per schema
    object and cached (keyed by identity: adapters hand the same schema object on every call).
    """
    key = id(schema)
    entry = _cache.get(key)
    if entry is None or entry[0] is not schema:
        as_dict = _schema_dict(schema)
        validator: Validator = _accept_all if as_dict is None else _compile(as_dict)
        with _lock:
            _cache[key] = (schema, validator)  # holding the schema keeps its id from being reused
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    else:
        validator = entry[1]
    return validator(args)


def _accept_all(args: Any) -> str | None:
    return None
