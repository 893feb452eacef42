"""Framework-neutral pieces the adapters share: finding the caller in a context, reading argument text,
recognising a violation JSON, LangChain-style approval answers, and a bounded map for per-call hand-offs.

Nothing here imports a framework or decides anything: the Guard decides (its adapter contract, in
``_guard/guard.py``), the integrations translate, and this module holds what more than one of them would otherwise
write twice.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from mcp_guard._policy.decision import Decision

K = TypeVar("K")
V = TypeVar("V")

#: How identity / session are found: a fixed string, or a callable given the framework's context object.
WhoLookup = str | Callable[[Any], Any] | None


def field(source: Any, key: str) -> Any:
    """``source[key]`` for a mapping, ``source.key`` for anything else; None when absent."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def lookup(spec: WhoLookup, context: Any, key: str) -> str | None:
    """An identity or session: ``spec`` as is when a string, its answer when callable, else ``context[key]``."""
    if isinstance(spec, str):
        return spec
    found = spec(context) if spec is not None else field(context, key)
    return None if found is None else str(found)


def parse_args(raw: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The model's argument text as an object, or ``None`` and why not (for :meth:`Guard.malformed`)."""
    if raw is None or not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"the arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    except (ValueError, RecursionError):  # e.g. nesting too deep for the parser
        return None, "the arguments are not valid JSON"
    if not isinstance(value, dict):
        return None, f"the arguments must be a JSON object, not {type(value).__name__}"
    return value, None


def is_violation(text: str) -> bool:
    """Whether ``text`` is a policy violation JSON (spec section 5), e.g. a rejection message we wrote."""
    if '"policy_violation"' not in text:
        return False
    try:
        payload = json.loads(text)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("error") == "policy_violation"


def without_required(node: Any) -> Any:
    """A JSON Schema with every ``required`` list dropped (types still checked, missing values allowed)."""
    if isinstance(node, Mapping):
        # A property may be named "required" too: only the keyword (a list of names) goes.
        return {k: without_required(v) for k, v in node.items() if k != "required" or not isinstance(v, list)}
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


class Bounded(OrderedDict[K, V], Generic[K, V]):
    """A map that forgets its oldest entries past ``limit``: per-call state whose call may never come back
    (an abandoned run) must not pile up. ``on_evict(key, value)`` settles an entry that is forgotten."""

    def __init__(self, limit: int = 10_000, on_evict: Callable[[K, V], None] | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.on_evict = on_evict

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        if len(self) > self.limit:
            old = self.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(*old)


# -- approval answers in LangChain's HumanInTheLoop shapes (also the inbox's resume values) ---------------------


def approval_request(call_id: Any, tool: str, args: Any, decision: Decision, who: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ToolApprovalRequest`` (``per_call``) a pause shows a reviewer, plus what mcp-guard knows."""
    return {
        "type": "tool_approval",
        "tool_call_id": call_id,
        "name": tool,
        "args": args,
        "description": decision.approval_description or decision.reason or f"{tool} needs approval",
        # What LangChain's request does not carry, for reviewers that want it (ignored by the others).
        "mcp_guard": {
            "server": who["server"],
            "identity": who["identity"],
            "session": who["session"],
            "rule": decision.rule,
            "reason": decision.reason,
            "risk_class": decision.risk_class,
        },
    }


def response_schema(tool: str, args_schema: Any) -> dict[str, Any]:
    """The JSON Schema of the answers a reviewer may send (LangChain's ``Decision`` types for this tool).

    A dict, not a type: LangGraph then publishes it to clients without validating the resume value, so the
    0.1 resume values and a batched ``HITLResponse`` are still accepted (:func:`resume_answer` reads them).
    """
    if isinstance(args_schema, Mapping):
        args: Any = dict(args_schema)
    else:
        try:
            args = args_schema.model_json_schema() if args_schema is not None else {"type": "object"}
        except Exception:
            args = {"type": "object"}

    def choice(title: str, kind: str, required: list[str], **properties: Any) -> dict[str, Any]:
        props = {"type": {"const": kind}, **properties}
        return {"type": "object", "title": title, "properties": props, "required": ["type", *required]}

    edited = {
        "type": "object",
        "properties": {"name": {"const": tool}, "args": args},
        "required": ["name", "args"],
    }
    return {
        "oneOf": [
            choice("ApproveDecision", "approve", []),
            choice("EditDecision", "edit", ["edited_action"], edited_action=edited),
            choice("RejectDecision", "reject", [], message={"type": "string"}),
        ]
    }


def resume_answer(value: Any, tool: str) -> Any:
    """A resume value as the Guard's approval answer; what cannot be read becomes a refusal.

    Accepted: one LangChain ``Decision`` (``approve``; ``edit`` with ``edited_action {name, args}``; ``reject``
    with an optional ``message``), a batched ``HITLResponse`` holding exactly one decision, and the 0.1 values
    (``{"type": "edit", "args": ...}``, ``True`` / ``False``). An edit that names another tool is refused: a
    reviewer cannot switch tools. Edited arguments are evaluated again by the Guard.
    """
    if isinstance(value, Mapping) and "decisions" in value and "type" not in value:
        decisions = value.get("decisions")
        if not isinstance(decisions, Sequence) or isinstance(decisions, str) or len(decisions) != 1:
            return {"type": "reject", "message": "the approval answer was not understood (one decision expected)"}
        value = decisions[0]
    if isinstance(value, Mapping) and value.get("type") == "edit":
        edited = value.get("edited_action")
        if isinstance(edited, Mapping) and edited.get("name", tool) != tool:
            return {"type": "reject", "message": "an edit cannot switch to another tool"}
    if isinstance(value, Mapping) and value.get("type") == "respond":
        return {"type": "reject", "message": "a human answered in place of the tool; the call was not made"}
    return value
