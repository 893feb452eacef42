"""A case file's validation problems in the words ``mcp-guard validate`` uses for a policy, with line and column.

pydantic says ``/cases/0/expct: Extra inputs are not permitted``; a reader wants
``cases.yaml:5:5: /cases/0/expct: unknown field 'expct' (did you mean 'expect'?)``. The field path is a JSON
Pointer into the file, found again in the file's text by :class:`~mcp_guard._policy.locate.Locator`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from mcp_guard._policy.conditions import describe_type
from mcp_guard._policy.locate import Locator
from mcp_guard._policy.matching import pointer
from mcp_guard._policy.suggest import did_you_mean

_UNIONS = (Union, types.UnionType)


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None, bool]:
    """(the location without pydantic's union tags, the model holding its last part, whether a tag named a
    member that is not a model, such as ``bool`` in ``approve: bool | Edit``)."""
    path: list[Any] = []
    current: Any = root
    holder: type[BaseModel] | None = None
    plain_member = False
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        origin = typing.get_origin(current)
        if origin in _UNIONS:
            members = [a for a in typing.get_args(current) if a is not type(None)]
            named = [m for m in members if getattr(m, "__name__", None) == part]
            if named:  # pydantic's tag for the union member this error is about: not a part of the file
                current = named[0]
                plain_member = plain_member or not (isinstance(current, type) and issubclass(current, BaseModel))
                continue
            if len(members) == 1:
                current = members[0]
                origin = typing.get_origin(current)
            else:
                plain_member = True  # a tag such as "dict[str,any]": the member is not a model
                continue
        path.append(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            holder = current
            info = current.model_fields.get(str(part))
            current = info.annotation if info is not None else None
        elif origin in (list, dict):
            holder = None
            current = typing.get_args(current)[-1]
        else:
            holder = None
            current = None
    return tuple(path), holder, plain_member


def _fields(model: type[BaseModel] | None) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()] if model else []


def problems(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """``(JSON pointer, message)`` for each problem, most useful first, without duplicates."""
    found: list[tuple[str, str]] = []
    by_model: set[str] = set()  # union locations that have an error about their model member
    detailed = []
    for err in exc.errors(include_url=False):
        path, _, plain = _walk(root, tuple(err["loc"]))
        detailed.append((err, path, plain))
        if not plain:
            by_model.add(pointer(*path[:-1]))
            by_model.add(pointer(*path))
    for err, path, plain in detailed:
        where = pointer(*path)
        if plain and where in by_model:
            continue  # "not a boolean" beside the problems of the mapping that was meant: the mapping's win
        kind = err["type"]
        name = str(path[-1]) if path else ""
        if kind == "extra_forbidden":
            _, holder, _ = _walk(root, tuple(err["loc"]))  # the model that has no such field
            fields = _fields(holder)
            allowed = ", ".join(fields) or "see `mcp-guard schema --cases`"
            message = f"unknown field {name!r}{did_you_mean(name, fields)}; allowed fields: {allowed}"
        elif kind == "missing":
            message = f"required field {name!r} is missing"
        elif kind in ("value_error", "assertion_error"):
            message = str((err.get("ctx") or {}).get("error") or err["msg"])
        elif kind.endswith("_type") and kind != "literal_type":
            message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {describe_type(err.get('input'))}"
        else:
            message = f"{err['msg'][0].lower()}{err['msg'][1:]}"
        if (where, message) not in found:
            found.append((where, message))
    return found


def describe(exc: ValidationError, root: type[BaseModel], source: str, text: str, kind: str) -> str:
    """One line: ``FILE:LINE:COLUMN: not a valid case file: /pointer: message`` for the first problem, then the
    others, each with its own line and column."""
    locator = Locator(text, kind)
    parts = []
    for n, (where, message) in enumerate(problems(exc, root)):
        at = locator.locate(where)
        if n == 0:
            head = f"{source}:{at[0]}:{at[1]}" if at else source
            parts.append(f"{head}: not a valid case file: {where or '/'}: {message}")
        else:
            parts.append(f"{where or '/'}" + (f" (line {at[0]}, column {at[1]})" if at else "") + f": {message}")
    return "; ".join(parts)


__all__ = ["describe", "problems"]
