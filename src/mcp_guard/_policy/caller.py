"""Who is calling, as conditions read it: ``identity``, ``claims.<path>`` and ``context.<path>``.

``claims`` are a verified token's claims (the proxy's JWT front, or ``claims=`` given to the Guard);
``context`` is the framework's own context object (LangChain's runtime context, the Agents SDK's
``RunContextWrapper.context``, or ``context=`` given to the Guard). A path walks into them: keys of a
mapping, fields of a pydantic model or a dataclass, attributes an object holds in its ``__dict__``, and
digit segments index lists. Nothing is ever called: no methods, no properties, no ``__getattr__``; a
context object is read as data, so a policy cannot make it run code.

A rule that reads one of these values when it is missing (no identity, no claims, no context, or no such
key or field; ``None`` counts as missing) refuses with code ``identity_required``, whatever the operator:
an unknown caller must never pass a ``require``, nor slip under a ``deny_if`` that only fires for known
ones. ``exists`` is the one way to write what happens to a caller without the value, and a refusal it
gives for a missing value also carries ``identity_required``; an ``approve_if ... exists: false`` asks a
human as written. The reason is marked with :class:`CallerMissing` so the policy can tell it from the
usual ``requirement_failed`` / ``denied``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MemberDescriptorType
from typing import Any, Final

#: The objects a caller path may read beyond ``identity``: a token's claims and the framework's context.
ROOTS: Final = ("claims", "context")


def reads_caller(path: str) -> bool:
    """Whether a condition path reads the caller (``identity``, ``claims.*``, ``context.*``)."""
    return path == "identity" or reads_caller_object(path)


def reads_caller_object(path: str) -> bool:
    """Whether a condition path reads ``claims.*`` or ``context.*`` (the values a call carries beside its args)."""
    return path.startswith(("claims.", "context."))


def check_caller_path(path: str) -> bool:
    """Whether ``path`` is a valid ``claims.<name>[.<name>...]`` or ``context.<name>[.<name>...]`` path."""
    root, _, rest = path.partition(".")
    return root in ROOTS and bool(rest) and all(rest.split("."))


class CallerMissing(str):
    """A check's reason that means: the check reads the caller, and the value it reads is missing.

    A ``str``, so it travels where every reason does; the policy gives such a refusal the code
    ``identity_required``.
    """

    __slots__ = ()


def caller_view(context: Any, claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """What caller checks read in place of the arguments: ``{"context": ..., "claims": ...}``."""
    return {"context": context, "claims": claims}


def caller_getter(path: str, missing: object, through: object) -> Callable[[Mapping[str, Any]], Any]:
    """A reader of ``claims.a.b`` / ``context.a.b`` from :func:`caller_view`'s mapping.

    Gives the value, ``missing`` when a key, field or index is absent or ``None``, or ``through`` when the
    path runs through a value that cannot hold the next segment (a string, a number, a list named by a word).
    """
    root, *segments = path.split(".")

    def get(view: Mapping[str, Any]) -> Any:
        cur = view.get(root)
        if cur is None:
            return missing
        for seg in segments:
            cur = _step(cur, seg, missing, through)
            if cur is missing or cur is through:
                return cur
            if cur is None:
                return missing
        return cur

    return get


def _step(obj: Any, name: str, missing: object, through: object) -> Any:
    """``obj``'s member ``name`` read as data: nothing of the object's own is called (no method, property,
    ``__getattr__`` or descriptor other than a plain slot)."""
    if isinstance(obj, Mapping):
        return obj.get(name, missing)
    if isinstance(obj, (list, tuple)):
        if not name.isdigit():
            return through
        idx = int(name)
        return obj[idx] if idx < len(obj) else missing
    if isinstance(obj, (str, bytes, int, float, bool)):
        return through
    if name.startswith("__"):
        return missing  # the object's machinery, not its data
    state = _raw(obj, "__dict__")  # pydantic fields, plain dataclasses, any object's own attributes
    if isinstance(state, dict) and name in state:
        return state[name]
    slots = _slots(type(obj))  # type: ignore[arg-type]  # a class is hashable; mypy reads type[Any] as not
    if name in slots and isinstance(inspect.getattr_static(type(obj), name, None), MemberDescriptorType):
        return _raw(obj, name, missing)  # a slotted dataclass's field (an unset slot is missing)
    extra = _raw(obj, "__pydantic_extra__")  # a pydantic model's extra="allow" fields
    if isinstance(extra, dict) and name in extra:
        return extra[name]
    if isinstance(state, dict) or slots:
        return missing  # an object that holds data, but not this member
    return through


def _raw(obj: Any, name: str, default: object = None) -> Any:
    # object.__getattribute__ skips a class's own __getattribute__ / __getattr__ hooks.
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return default


@functools.lru_cache(maxsize=256)
def _slots(cls: type) -> frozenset[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        declared = klass.__dict__.get("__slots__", ())
        names.update((declared,) if isinstance(declared, str) else declared)
    return frozenset(names)


__all__ = [
    "ROOTS",
    "CallerMissing",
    "caller_getter",
    "caller_view",
    "check_caller_path",
    "reads_caller",
    "reads_caller_object",
]
