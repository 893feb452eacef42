"""How :func:`~mcp_guard.integrations.openai_agents.guard_mcp_server` wires a guard into an Agents SDK MCP server
instance: its tool listing, its per-tool ``needs_approval``, its ``call_tool`` and ``tool_meta_resolver``, each
replaced on the instance and put back by ``unguard_mcp_server``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp_guard._compat import error_result
from mcp_guard._errors import require_extra
from mcp_guard.integrations import _agents_private
from mcp_guard.integrations._agents_binding import _CALL_KEY, _Binding, _compose_needs_approval, _maybe_await

if TYPE_CHECKING:
    from agents.mcp.util import ToolFilterContext


def install(server: Any, binding: _Binding, guardrail: Any) -> None:
    """Guard ``server`` in place; remembers what it replaced for :func:`uninstall`."""
    # What to put back on unguard: the attributes we replace, as they were (instance dict entries or absent).
    saved = {name: server.__dict__.get(name, _ABSENT) for name in _REPLACED}
    server.tool_input_guardrails = [*(server.tool_input_guardrails or []), guardrail]
    _install_tool_filter(server, binding)
    _install_needs_approval(server, binding)
    _install_call_tool(server, binding)
    server._mcp_guard = (binding, saved)


def uninstall(server: Any) -> None:
    """Undo :func:`install` (a no-op for a server that is not guarded)."""
    state = server.__dict__.pop("_mcp_guard", None)
    if state is None:
        return
    for name, value in state[1].items():
        if value is _ABSENT:
            server.__dict__.pop(name, None)
        else:
            server.__dict__[name] = value


_ABSENT = object()
_REPLACED = (
    "tool_input_guardrails",
    "tool_filter",
    "list_tools",
    "call_tool",
    "tool_meta_resolver",
    *_agents_private.MCP_SERVER_PATCHED,
)


def _install_tool_filter(server: Any, binding: _Binding) -> None:
    """Hidden and outright-denied tools leave the listing (remembered for :meth:`_Binding.unlisted_tool`),
    through the server's ``tool_filter`` (composed with its own) or, without one, around ``list_tools``."""

    def shown(tool: Any) -> bool:
        schema = getattr(tool, "inputSchema", None) or getattr(tool, "input_schema", None)  # mcp 1.x / 2.x
        if binding.guard.listed(  # compared with the policy's pins at every listing
            tool.name,
            server=binding.server,
            annotations=binding.saw_mcp_tool(tool),
            description=getattr(tool, "description", None),
            input_schema=schema if isinstance(schema, Mapping) else None,
        ):
            binding.unlisted.pop(tool.name, None)
            return True
        binding.unlisted[tool.name] = tool
        return False

    if not hasattr(server, "tool_filter"):  # MCP server classes without a tool_filter (custom subclasses)
        original = server.list_tools

        async def list_tools(run_context: Any = None, agent: Any = None) -> list[Any]:
            tools = await original(run_context, agent)
            await binding.note_rejections(run_context)
            return [tool for tool in tools if shown(tool)]

        server.list_tools = list_tools
        return
    existing = server.tool_filter

    async def tool_filter(ctx: ToolFilterContext, tool: Any) -> bool:
        await binding.note_rejections(getattr(ctx, "run_context", None))
        if not shown(tool):
            return False
        if existing is None:
            return True
        if isinstance(existing, Mapping):
            allowed = existing.get("allowed_tool_names")
            blocked = existing.get("blocked_tool_names")
            return (allowed is None or tool.name in allowed) and (blocked is None or tool.name not in blocked)
        return bool(await _maybe_await(existing(ctx, tool)))

    server.tool_filter = tool_filter


def _install_needs_approval(server: Any, binding: _Binding) -> None:
    # The SDK builds each MCP tool's FunctionTool.needs_approval from the server's approval policy, whose
    # callable form cannot see the call's arguments (approve_if needs them). Hook the per-tool factory on
    # this instance instead (a private method: see _agents_private); an approval the server itself already
    # requires is kept.
    def wrap(original: Any) -> Any:
        def get_needs_approval(tool: Any, agent: Any) -> Any:
            existing = original(tool, agent)
            if binding.guard.approver is not None or existing is True:
                return existing
            if not binding.may_need_approval(tool.name, binding.saw_mcp_tool(tool)):
                return existing
            return _compose_needs_approval(binding, tool.name, existing if callable(existing) else None)

        return get_needs_approval

    _agents_private.wrap_mcp_needs_approval(server, wrap)


def _install_call_tool(server: Any, binding: _Binding) -> None:
    """Admitted calls run with the admitted arguments and are finished (quota, audit) when the server answers.

    ``call_tool`` is not told which call it serves; the SDK asks the server's ``tool_meta_resolver`` for the
    call's ``_meta`` with the call's ToolContext first, so that is where the admission's key is put (and taken
    out again here: the server never sees it). The user's own resolver is still asked.
    """
    original, resolve = server.call_tool, getattr(server, "tool_meta_resolver", None)
    guard = binding.guard
    require_extra("mcp.types", "openai-agents", "guard_mcp_server")

    async def tool_meta_resolver(context: Any) -> Any:
        meta = await _maybe_await(resolve(context)) if resolve is not None else None
        key = id(getattr(context, "run_context", None))
        if key not in binding.admitted or not (meta is None or isinstance(meta, dict)):
            return meta
        return {**(meta or {}), _CALL_KEY: key}

    async def call_tool(tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None) -> Any:
        meta = dict(meta) if meta is not None else None
        entry = binding.take(meta.pop(_CALL_KEY, None) if meta is not None else None, tool_name)

        async def raw_call(**args: Any) -> Any:
            return await (original(tool_name, args) if not meta else original(tool_name, args, meta=meta))

        if entry is None:  # not admitted by our guardrail (a direct call): the whole pipeline runs here
            result = await guard.arun(
                tool_name,
                arguments or {},
                raw_call,
                server=binding.server,
                annotations=binding.annotations.get(tool_name),
                tool_schema=binding.schemas.get(tool_name),
            )
            return (
                result.value if result.violation is None else error_result(guard.violation(result.violation).to_json())
            )
        admission = entry[1]
        return await binding.run_admitted(admission, lambda: raw_call(**admission.call.args), guard.is_error_result)

    server.call_tool = call_tool
    server.tool_meta_resolver = tool_meta_resolver
