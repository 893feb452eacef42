"""What the proxy says on the wire of its own: the refusal a client sees, and the approval question and its answer.

Written on plain JSON, apart from the relay (:mod:`mcp_guard._proxy.relay`) that sends them, so each rule is
in one place and testable alone. Imports nothing of the ``mcp`` SDK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_guard._calls.approval import ApprovalDecision, ApprovalRequest
from mcp_guard._policy.decision import Decision

#: The form an approval's ``elicitation/create`` asks the person to fill in: nothing but accept or decline.
APPROVAL_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def refusal(violation: Decision) -> dict[str, Any]:
    """The ``tools/call`` result for a refused call: ``isError``, its one text the section 5 violation JSON.

    Whatever the guard's ``on_violation``: a client on the other side of the wire cannot catch a
    ``PolicyViolation``, so the proxy always answers (``Guard.arun`` returns the violation, never raises it).
    """
    return {"content": [{"type": "text", "text": violation.to_json()}], "isError": True}


def can_elicit(capabilities: Any) -> bool:
    """Whether a client's ``initialize`` capabilities (as JSON) allow form elicitation (empty means form, per spec)."""
    caps = capabilities.get("elicitation") if isinstance(capabilities, Mapping) else None
    return isinstance(caps, Mapping) and ("form" in caps or "url" not in caps)


def approval_message(request: ApprovalRequest) -> str:
    """The question put to a person by elicitation: tool, server, arguments, why, who is calling.

    Values under the rule's ``redact`` paths read ``[redacted]``, as on the inbox page: a client's dialog is
    a screen like any other, and may be logged.
    """
    from mcp_guard._inbox.inbox import shown_args

    where = f" on {request.server}" if request.server else ""
    shown, _ = shown_args(request.args, request.redact)
    lines = [f"Allow {request.tool}{where}?", f"Arguments: {json.dumps(shown, ensure_ascii=False)}"]
    if request.reason:
        lines.append(f"Why you are asked: {request.reason}")
    if request.identity:
        lines.append(f"Caller: {request.identity}")
    return "\n".join(lines)


def approval_answer(action: Any) -> ApprovalDecision:
    """The approver's decision from an elicitation's ``action``: accept approves, anything else denies."""
    if action == "accept":
        return ApprovalDecision.approve()
    if action == "decline":
        return ApprovalDecision.deny("the user declined this call")
    if action == "cancel":
        return ApprovalDecision.deny("the user cancelled the approval")
    return ApprovalDecision.deny("the client could not answer the approval request")


__all__ = ["APPROVAL_SCHEMA", "approval_answer", "approval_message", "can_elicit", "refusal"]
