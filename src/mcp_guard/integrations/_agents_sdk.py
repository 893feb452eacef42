"""What the Agents SDK adapter reads of the SDK's internals, in one place, so an SDK upgrade touches one file.

Each helper degrades to the documented behaviour when the SDK changes (no run id, the documented prefixed
tool name, no approval status), never to a failed call. The private SDK functions the adapter *replaces* are
listed in :mod:`mcp_guard.integrations._agents_private`. The adapter itself
(:mod:`mcp_guard.integrations.openai_agents`) uses only these two modules and the SDK's public objects.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("mcp_guard")


def run_id() -> str | None:
    """The Agents SDK's id for this run: its trace id, when tracing is on (the SDK has no other run id)."""
    try:
        from agents.tracing import get_current_trace

        trace = get_current_trace()
    except Exception:  # another SDK version: no run id rather than a failed call
        return None
    trace_id = getattr(trace, "trace_id", None)
    return trace_id if isinstance(trace_id, str) and trace_id != "no-op" else None


def user_texts(run_context: Any) -> list[str]:
    """The user's messages in the run's input (``RunContextWrapper.turn_input``, copied into every tool context):
    items with role ``user``, their text (a string, or the ``input_text`` parts of a list)."""
    texts: list[str] = []
    for item in getattr(run_context, "turn_input", None) or ():
        role = item.get("role") if isinstance(item, dict) else getattr(item, "role", None)
        if role != "user":
            continue
        content = item.get("content") if isinstance(item, dict) else getattr(item, "content", None)
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
                if isinstance(text, str):
                    texts.append(text)
    return texts


def prefixed_names(server: str, tool: str) -> tuple[str, ...]:
    """The names the SDK gives ``tool`` of ``server`` when it prefixes MCP tool names (its own naming rule)."""
    try:
        from agents.mcp._logging import get_mcp_server_log_name
        from agents.mcp.util import MCPUtil

        name = get_mcp_server_log_name(server)
        base = MCPUtil._build_prefixed_tool_base_name(name, tool)
        return (base, MCPUtil._shorten_tool_name(base, f"{name}\0{tool}"))
    except Exception:  # another SDK version: fall back to the documented shape
        return (f"mcp_{server}__{tool}",)


def approval_status(ctx: Any, tool: str, call_id: str) -> bool | None:
    """What a human said about this call through the SDK (``state.approve`` / ``state.reject``), if anything."""
    if not getattr(ctx, "_approvals", True):  # nothing was approved or rejected in this run: skip the lookup
        return None
    is_approved = getattr(ctx, "is_tool_approved", None)
    if not callable(is_approved):
        return None
    status = is_approved(tool, call_id)
    return status if isinstance(status, bool) else None


def standing_approval(ctx: Any, tool: str, call_id: str) -> Any:
    """The SDK's record of a standing yes for ``tool`` (``state.approve(item, always_approve=True)``) that answers
    this call, or None when the yes is for this call alone (or there is none).

    The SDK keeps a standing yes as a record whose ``approved`` is ``True`` rather than a list of call ids; it
    covers later calls of that tool by that agent in that run, whatever their arguments (its key is the tool,
    not the call). A yes given to this very call id wins over a standing one, as in the SDK's own lookup.
    """
    standing: Any = None
    for key, record in list((getattr(ctx, "_approvals", None) or {}).items()):
        if not isinstance(key, str) or _approval_tool_name(key) != tool:
            continue
        approved = getattr(record, "approved", None)
        if isinstance(approved, list) and call_id in approved:
            return None
        if approved is True and standing is None:
            standing = record
    return standing


def rejections(run_context: Any) -> list[tuple[str, str, dict[str, str]]]:
    """The calls a human rejected with ``state.reject()`` in this run: (public tool name, call id, the record's
    rejection messages by call id, which the SDK then shows the model)."""
    found: list[tuple[str, str, dict[str, str]]] = []
    for key, record in list((getattr(run_context, "_approvals", None) or {}).items()):
        rejected = getattr(record, "rejected", None)
        if isinstance(rejected, list) and rejected and isinstance(key, str):
            found.extend((_approval_tool_name(key), call_id, record.rejection_messages) for call_id in rejected)
    return found


def _approval_tool_name(key: str) -> str:
    """The tool name of an SDK approval-record key (an agent-bound key object, its serialized form, or a name)."""
    tool_key = getattr(key, "tool_key", None)
    if isinstance(tool_key, str):
        return tool_key
    prefix = "__agents_function_approval__:"
    if key.startswith(prefix):
        try:
            parts = json.loads(key[len(prefix) :])
        except ValueError:
            return key
        if isinstance(parts, list) and len(parts) == 2 and isinstance(parts[1], str):
            return parts[1]
    return key


def mcp_function_tool(tool: Any, server: Any, agent: Any, name: str) -> Any:
    """The SDK's FunctionTool for MCP ``tool`` of ``server``, as the agent would build it, named ``name``."""
    from agents.mcp.util import MCPUtil

    config = getattr(agent, "mcp_config", None) or {}
    options: dict[str, Any] = {"tool_name_override": name}
    if "failure_error_function" in config:
        options["failure_error_function"] = config["failure_error_function"]
    return MCPUtil.to_function_tool(
        tool, server, bool(config.get("convert_schemas_to_strict", False)), agent, **options
    )
