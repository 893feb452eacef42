"""Every private Agents SDK function mcp-guard replaces, in one place, each with why no public way exists.

Tested with openai-agents 0.24.0 (the pinned version and the newest on PyPI at the time of writing), with mcp
1.30 and mcp 2.3. An SDK upgrade that renames or reshapes one of these touches this file only, and each patch
degrades to the SDK's own behaviour (logged) rather than to a failed call.

1. ``agents.run_internal.turn_resolution.process_model_response`` (process-wide, wrapped once; installed by the
   first adapter built, never at import): :func:`extend_tool_lookup`. The SDK resolves a model's tool call among
   the tools it showed the model; a name it lacks ends the run (``ModelBehaviorError``). The public way out is
   the run's ``RunConfig`` (``tool_not_found_behavior="return_error_to_model"`` with a ``tool_error_formatter``:
   :func:`~mcp_guard.integrations.openai_agents.guard_run_config` builds one), but ``RunConfig`` belongs to the
   ``Runner.run`` call, which the adapters never see. For runs without it, the wrapper adds, for that one lookup,
   a tool that answers the call through the agent's guard. A run whose ``RunConfig`` came from
   ``guard_run_config`` goes through untouched: the public hook answers it.
2. ``MCPServer._get_needs_approval_for_tool`` (per guarded server instance, put back by ``unguard_mcp_server``):
   :func:`wrap_mcp_needs_approval`. The public ``require_approval`` callable of an MCP server is asked
   ``(run_context, agent, tool)``, without the call's arguments, so a rule's ``approve_if`` on an argument cannot
   be decided there. The per-tool factory returns the ``FunctionTool.needs_approval`` the SDK builds, whose
   callable form is asked with the arguments.

Private *reads* (names, approval records, the run id) live in :mod:`mcp_guard.integrations._agents_sdk`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mcp_guard")

#: What :func:`wrap_mcp_needs_approval` replaces on a server instance (for ``unguard_mcp_server`` to put back).
MCP_SERVER_PATCHED = ("_get_needs_approval_for_tool",)

#: A formatter carrying this attribute (true) answers unknown tools itself: see ``_agents_unknown``.
ANSWERS_UNKNOWN_TOOLS = "mcp_guard_answers_unknown_tools"

_lookup_installed = False


def extend_tool_lookup(supply: Callable[[Any, list[str]], list[Any]]) -> None:
    """Let the SDK find a tool for a call whose name the shown tools lack (wrapped once per process).

    ``supply(agent, names)`` returns the tools to add to this one lookup (none for an agent no guard is tied to).
    Responses that call only shown tools, and runs whose ``RunConfig`` answers unknown tools through
    ``guard_run_config``, go through untouched. On an SDK without that function nothing is wrapped (a warning is
    logged): hidden tools stay hidden, and a call to one ends a run that has no ``guard_run_config``.
    """
    global _lookup_installed
    if _lookup_installed:
        return
    _lookup_installed = True
    try:
        from agents.run_internal import turn_resolution

        original = turn_resolution.process_model_response
    except (ImportError, AttributeError):
        log.warning(
            "this openai-agents version has no tool lookup to extend; a call to a hidden or unknown tool ends a "
            "run unless its RunConfig comes from guard_run_config"
        )
        return
    if getattr(original, "_mcp_guard_original", None) is not None:
        return

    @functools.wraps(original)
    def process_model_response(*args: Any, **kwargs: Any) -> Any:
        if not _answered_publicly(kwargs.get("run_config")):
            try:
                extra = _missing_tools(supply, kwargs.get("agent"), kwargs.get("all_tools"), kwargs.get("response"))
            except Exception:  # never break the SDK's own path; the call is then unknown, as without a guard
                log.exception("could not supply tools for calls the model was not shown")
                extra = []
            if extra:
                kwargs["all_tools"] = [*kwargs["all_tools"], *extra]
        return original(*args, **kwargs)

    process_model_response._mcp_guard_original = original  # type: ignore[attr-defined]
    turn_resolution.process_model_response = process_model_response


def _answered_publicly(run_config: Any) -> bool:
    """The run's own ``RunConfig`` sends unknown tools to a guard's formatter (``guard_run_config``)."""
    formatter = getattr(run_config, "tool_error_formatter", None)
    return getattr(run_config, "tool_not_found_behavior", None) == "return_error_to_model" and bool(
        getattr(formatter, ANSWERS_UNKNOWN_TOOLS, False)
    )


def _missing_tools(supply: Callable[[Any, list[str]], list[Any]], agent: Any, shown: Any, response: Any) -> list[Any]:
    calls = [o for o in getattr(response, "output", None) or () if getattr(o, "type", None) == "function_call"]
    if not calls or agent is None:
        return []
    names = {getattr(t, "name", None) for t in shown or ()}
    missing = [c.name for c in calls if c.name not in names and not getattr(c, "namespace", None)]
    return supply(agent, list(dict.fromkeys(missing))) if missing else []


def wrap_mcp_needs_approval(server: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``server``'s per-tool ``needs_approval`` factory with ``wrap(original)`` (this instance only)."""
    server._get_needs_approval_for_tool = wrap(server._get_needs_approval_for_tool)
