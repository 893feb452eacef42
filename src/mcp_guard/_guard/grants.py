"""Approval grants (spec section 11): a human's yes that covers later identical calls, held in the store.

Every identical call asking again trains people to click yes without reading; a yes that covers more than the
human saw is worse. A grant is therefore bound to what will run and who asks:

- the tool and its server, the *canonical* arguments of the call that is admitted (after the strict schema
  check, and after an edit: what will run, not what the model typed), unless the approver widened the grant
  to any arguments explicitly (``args="any"``);
- the caller's identity (never widened);
- the rule that asked (its pointer and a hash of its text: a reload that changes the rule drops its grants,
  since their keys no longer match), and for a pinned tool its listed hash;
- ``scope="session"``: the call's session (a call with no session gets no session grant); ``ttl_s``: a time
  to live. A session grant without a ``ttl_s`` lives :data:`SESSION_GRANT_TTL_S`.

A key is a SHA-256 of that canonical description, kept under the identity (so a Redis Cluster keeps one
caller's grants on one shard and looks them up in one round trip). The store keeps only the key and the grant's
id: no arguments, no identity in clear.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii  # what canonical_json escapes strings with
from typing import Any

from mcp_guard._guard.pins import canonical_json
from mcp_guard._policy.decision import escape_key_part

#: How long a session grant with no ``ttl_s`` lives: sessions have no end the guard is told of.
SESSION_GRANT_TTL_S = 24 * 3600.0


def grant_owner(identity: str | None) -> str:
    """The store owner of an identity's grants (``-`` for calls with no identity)."""
    return "-" if identity is None else "i" + escape_key_part(identity)


def _rule_text(policy: Any, pointer: str | None) -> str:
    """The text of the rule that asked: the first two pointer tokens (``/tools/x``, ``/classes/write``)."""
    if not pointer:
        return ""
    head = "/".join(pointer.split("/")[:3])
    try:
        return canonical_json(policy.rule_at(head))
    except (TypeError, ValueError):
        return str(getattr(policy, "hash", ""))  # cannot say which rule: any policy change drops the grant


def _args_text(args: Mapping[str, Any]) -> str | None:
    """The arguments' canonical JSON, or None for arguments that are not plain JSON (a non-JSON value, NaN,
    nesting past the recursion limit): those never match, and never make, an argument-bound grant."""
    try:
        return canonical_json(dict(args))
    except (TypeError, ValueError, RecursionError):
        return None


def _digest(base_text: str, args_text: str, where: str) -> str:
    # The text is canonical_json({**base, "where": where}) + "\n" + args_text, built without serialising again:
    # "where" sorts after every key of the base, so it goes last, before the closing brace.
    text = f'{base_text[:-1]},"where":{encode_basestring_ascii(where)}}}\n{args_text}'
    return hashlib.sha256(text.encode()).hexdigest()


_ANY_ARGS = "*"  # not JSON text of any object: no call's arguments read the same


def _base(tool: str, server: str | None, decision: Any, policy: Any) -> dict[str, Any]:
    return {
        "tool": tool,
        "server": server,
        "rule": decision.rule,
        "rule_text": _rule_text(policy, decision.rule),
        "pin": list(decision.pin) if getattr(decision, "pin", None) else None,
    }


_BASE_TEXTS: dict[tuple[Any, ...], str] = {}
_MAX_BASE_TEXTS = 1024


def _base_text(tool: str, server: str | None, decision: Any, policy: Any) -> str:
    """``canonical_json(_base(...))``, kept per policy version and rule: serialising the rule's text for every
    call that needs approval cost more than the rest of the call (the lookup is on every such call)."""
    pin = getattr(decision, "pin", None)
    key = (getattr(policy, "hash", None), tool, server, decision.rule, tuple(pin) if pin else None)
    text = _BASE_TEXTS.get(key) if key[0] is not None else None
    if text is None:
        text = canonical_json(_base(tool, server, decision, policy))
        if key[0] is not None:
            if len(_BASE_TEXTS) >= _MAX_BASE_TEXTS:  # bounded: tool names may come from the model
                _BASE_TEXTS.clear()
            _BASE_TEXTS[key] = text
    return text


def lookup_digests(
    tool: str, server: str | None, args: Mapping[str, Any], session: str | None, decision: Any, policy: Any
) -> list[str]:
    """The keys a grant covering this call could have: these arguments or any, this session or any time."""
    base = _base_text(tool, server, decision, policy)
    wheres = ["ttl"] + ([f"session:{session}"] if session is not None else [])
    exact = _args_text(args)
    texts = ([exact] if exact is not None else []) + [_ANY_ARGS]
    return [_digest(base, text, where) for text in texts for where in wheres]


def grant_digest(
    tool: str,
    server: str | None,
    args: Mapping[str, Any],
    session: str | None,
    decision: Any,
    policy: Any,
    *,
    session_scope: bool,
    any_args: bool,
) -> str | None:
    """The key of a new grant for this call, or None when it cannot have one (a session grant with no session,
    or arguments that are not plain JSON bound into the grant)."""
    if session_scope and session is None:
        return None
    text = _ANY_ARGS if any_args else _args_text(args)
    if text is None:
        return None
    where = f"session:{session}" if session_scope else "ttl"
    return _digest(_base_text(tool, server, decision, policy), text, where)


def grant_ttl(session_scope: bool, ttl_s: float | None) -> float:
    if ttl_s is not None:
        return float(ttl_s)
    return SESSION_GRANT_TTL_S if session_scope else 0.0


def new_grant_id() -> str:
    return "grant-" + uuid.uuid4().hex[:16]
