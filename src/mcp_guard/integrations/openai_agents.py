"""OpenAI Agents SDK adapter: a policy tool input guardrail, guarded function tools, guarded MCP servers.

>>> from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_run_config, guard_tools
>>> guard = Guard("policy.json")
>>> server = guard_mcp_server(MCPServerStdio(params=..., name="exchange"), guard)
>>> agent = Agent(name="a", tools=guard_tools([get_quote], guard), mcp_servers=[server])
>>> result = await Runner.run(agent, "...", run_config=guard_run_config(guard))

How the SDK's hooks are used (this module holds no policy logic; it translates to :class:`~mcp_guard.Guard`):

- **Tool input guardrail** (:func:`policy_guardrail`): runs right before a tool executes. It admits the call
  (steps 1-6 of the evaluation order: decide, ask an inline approver, reserve rate-limit quota) or answers
  the model with ``reject_content(<violation JSON>)`` (spec section 5), or raises when the guard was built
  with ``on_violation="raise"`` (the SDK then raises ``ToolInputGuardrailTripwireTriggered``).
- **Execution wrapper** (:func:`guard_tools`, :func:`guard_mcp_server`): the admitted call runs with the
  arguments the guard admitted (an approver may have edited them); a failed call gives its quota back and
  exactly one audit event is written when the call ends.
- **Approvals**: with no inline ``approver``, tools whose rule can require approval get a ``needs_approval``
  callable, so the run pauses with ``result.interruptions`` and resumes with ``state.approve()`` /
  ``state.reject()`` (also after ``state.to_string()`` / ``RunState.from_string()``). No quota is consumed
  before the human answers, and none for a rejected call. A plain ``state.reject(item)`` is audited when the
  run resumes (the SDK lists the agent's tools with the run context holding the rejection before it answers
  the model; our ``tool_filter`` / ``is_enabled`` read it there) and the model gets the ``approval_denied``
  JSON; :func:`reject` does the same at once. ``state.approve(item, always_approve=True)`` (the SDK's "any
  arguments, rest of the run") becomes a ``session`` grant for any arguments in the guard's store, so later runs
  of the session are not held either; each call it covers is audited with the grant's id.
- **Tool list**: hidden and outright-denied tools are left out of what the model is shown (``tool_filter`` for
  MCP servers; left out of the list for function tools).
- **Calls of tools the model was not shown** (kept back, or no tool of that name): answered by a guard with the
  policy JSON (``hidden`` / ``denied``, audited) and the run goes on (spec section 10). Public first:
  :func:`guard_run_config` gives ``Runner.run`` a ``RunConfig`` whose ``tool_not_found_behavior`` and
  ``tool_error_formatter`` do it. A run without it is served by a private fallback for agents tied to a guard
  (``_agents_private.extend_tool_lookup``); see :mod:`mcp_guard.integrations._agents_unknown`.

Known limits (the SDK decides these, not us): a tool wired to the SDK's approval flow whose arguments are
not a JSON object is held for a human first (the SDK cannot hand such arguments to ``needs_approval``), and
is refused with ``invalid_arguments`` after approval; a call our guardrail admitted that the SDK then never
starts (its task cancelled) keeps its reserved quota until the window passes and writes no audit event.
What this module reads of the SDK's internals lives in :mod:`mcp_guard.integrations._agents_sdk`; the private
SDK functions it replaces, and why, are listed in :mod:`mcp_guard.integrations._agents_private`.

Identity and session come from the run context (``Runner.run(..., context=...)``): a ``user_id`` /
``session_id`` key of a mapping or attribute of an object, unless ``identity=`` / ``session=`` is a string or
a callable taking that context.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcp_guard._errors import require_extra
from mcp_guard._guard.guard import PolicySource, ToolCall
from mcp_guard._policy.decision import Decision
from mcp_guard.integrations._adapt import WhoLookup, parse_args

_agents = require_extra("agents", "openai-agents", "mcp_guard.integrations.openai_agents")
log = logging.getLogger(__name__)

# The private modules below ask for the extra the same way (their imports need the SDK).
from mcp_guard.integrations import _agents_mcp, _agents_private, _agents_unknown  # noqa: E402
from mcp_guard.integrations._agents_binding import (  # noqa: E402
    _annotations_of,
    _Binding,
    _build_guard,
    _compose_needs_approval,
    _function_tool_schema,
    _make_guardrail,
    _maybe_await,
)

if TYPE_CHECKING:
    from agents import FunctionTool, RunConfig, ToolInputGuardrail
    from agents.mcp import MCPServer

__all__ = ["guard_mcp_server", "guard_run_config", "guard_tools", "policy_guardrail", "reject", "unguard_mcp_server"]


# -- public API --------------------------------------------------------------------------------------------


def policy_guardrail(
    policy_or_guard: PolicySource,
    *,
    server: str | None = None,
    approver: Any = None,
    identity: WhoLookup = None,
    session: WhoLookup = None,
    **guard_options: Any,
) -> ToolInputGuardrail[Any]:
    """A tool input guardrail that enforces the policy on every call of the tools it is attached to.

    ``function_tool(fn, tool_input_guardrails=[policy_guardrail(policy)])``. ``server`` makes
    server-qualified rules (``github/create_issue``) apply. A violation is returned to the model as
    ``reject_content`` with the JSON of spec section 5; ``on_violation="raise"`` raises instead.

    When not to use it alone: a bare guardrail never sees the tool run, so a call that then fails keeps its
    rate-limit quota, an approver's edited arguments cannot be applied (the call is refused), and a
    ``require_approval`` rule with no ``approver`` is refused with ``approval_required`` instead of pausing
    the run. :func:`guard_tools` and :func:`guard_mcp_server` do all three properly. Nor does it see what a
    tool returns: result rules never run, ``no_secrets`` has no secret to refuse, and ``from`` / ``not_from``
    find no value of a tool's output (only the run input, as ``user``); each such check is logged as a
    warning when the guardrail is built (``mcp-guard validate --agents-guardrail`` lists them too). It sees no
    tool listing of its own: with a policy that pins tools, it compares the agent's FunctionTool of the called
    name at each call (and an MCP server's listing the first time it needs a schema), so a tool it never sees
    as listed is pinned only through a guard that saw its listing elsewhere.
    """
    guard = _build_guard(policy_or_guard, approver, guard_options)
    from mcp_guard._policy.lint import guardrail_warnings

    # Alone, the guardrail never sees a tool's output: say which of the policy's session checks cannot work.
    for warning in guardrail_warnings(guard.policy.document):
        log.warning("policy_guardrail: %s", warning)
    binding = _Binding(guard, server=server, identity=identity, session=session, wrapped=False)
    _agents_private.extend_tool_lookup(_not_shown_tools)
    return _make_guardrail(binding, "mcp_guard_policy")


def guard_tools(
    tools: Sequence[Any],
    policy_or_guard: PolicySource,
    *,
    server: str | None = None,
    approver: Any = None,
    identity: WhoLookup = None,
    session: WhoLookup = None,
    **guard_options: Any,
) -> list[Any]:
    """Guarded copies of ``tools`` (the originals are untouched), without the tools the policy hides or denies.

    Each ``FunctionTool`` gets the policy guardrail (after its own guardrails) and an execution wrapper
    that runs the admitted arguments and gives quota back when the tool fails. With no ``approver``, tools
    whose rule can require approval pause the run through the SDK (``needs_approval``). Tools of other
    kinds (hosted tools, computer, shell) are returned unchanged: the SDK offers no input guardrail for them.
    Give the agent the returned list itself (or a copy): when every tool was kept back it is empty, and still
    ties the agent to the guard, for calls the model makes to tools it was not shown (:func:`guard_run_config`).
    """
    guard = _build_guard(policy_or_guard, approver, guard_options)
    binding = _Binding(guard, server=server, identity=identity, session=session, wrapped=True)
    guardrail = _make_guardrail(binding, "mcp_guard_policy")
    guarded = _GuardedTools((), binding)
    for tool in tools:
        if not isinstance(tool, _agents.FunctionTool):
            guarded.append(tool)
            continue
        annotations = binding.annotations[tool.name] = _annotations_of(tool)
        binding.schemas[tool.name] = _function_tool_schema(tool)
        wrapped = _guard_function_tool(tool, binding, guardrail, annotations)
        schema = getattr(tool, "params_json_schema", None)
        if guard.listed(
            tool.name,
            server=server,
            annotations=annotations,
            description=getattr(tool, "description", None),
            input_schema=schema if isinstance(schema, Mapping) else None,
        ):
            guarded.append(wrapped)
        else:
            # Kept from the model, but a call to it is answered by the guard (hidden / denied), not the SDK.
            binding.unlisted[tool.name] = wrapped
    _agents_private.extend_tool_lookup(_not_shown_tools)
    return guarded


class _GuardedTools(list[Any]):
    """What :func:`guard_tools` returns: a plain list that also names its guard, so that an agent given it is tied
    to the guard even when every tool was kept back (then nothing else on the agent is ours, and a call to an
    unknown name could not be answered by the fallback: see ``_not_shown_tools``). Copies keep the tie; a new
    list built from it (``[*tools, other]``) does not, which matters only when every tool was kept back."""

    def __init__(self, items: Iterable[Any], binding: _Binding) -> None:
        super().__init__(items)
        self.mcp_guard_binding = binding

    def __copy__(self) -> _GuardedTools:
        return _GuardedTools(self, self.mcp_guard_binding)

    def __deepcopy__(self, memo: dict[int, Any]) -> _GuardedTools:
        return _GuardedTools(copy.deepcopy(list(self), memo), self.mcp_guard_binding)  # the guard is shared


def _guard_function_tool(
    tool: FunctionTool, binding: _Binding, guardrail: ToolInputGuardrail[Any], annotations: Mapping[str, Any] | None
) -> FunctionTool:
    original = tool.on_invoke_tool
    guard = binding.guard

    async def invoke(ctx: Any, input_json: str) -> Any:
        entry = binding.take(id(ctx), tool.name)
        if entry is None:
            # Not admitted by our guardrail (called outside the runner, or after a guardrail that does not
            # belong to us let it through without ours running): the whole pipeline runs here instead.
            return await binding.run_unadmitted(tool.name, ctx, input_json, lambda text: original(ctx, text))
        _, admission, edited = entry
        text = json.dumps(dict(admission.call.args)) if edited else input_json
        # The SDK turns a raising tool into an error message for the model and marks the context.
        failed = lambda _: bool(getattr(ctx, "_function_tool_default_failure_handled", False))  # noqa: E731
        return await binding.run_admitted(admission, lambda: original(ctx, text), failed)

    needs_approval: Any = tool.needs_approval
    if guard.approver is None and needs_approval is not True and binding.may_need_approval(tool.name, annotations):
        needs_approval = _compose_needs_approval(binding, tool.name, needs_approval)
    return dataclasses.replace(
        tool,
        on_invoke_tool=invoke,
        tool_input_guardrails=[*(tool.tool_input_guardrails or []), guardrail],
        needs_approval=needs_approval,
        is_enabled=_noting_rejections(binding, tool.is_enabled),
    )


def _noting_rejections(binding: _Binding, original: Any) -> Callable[[Any, Any], Awaitable[bool]]:
    """``is_enabled`` as before, after auditing calls a human rejected (the SDK asks it on every turn)."""

    async def is_enabled(run_context: Any, agent: Any) -> bool:
        await binding.note_rejections(run_context)
        return original if isinstance(original, bool) else bool(await _maybe_await(original(run_context, agent)))

    return is_enabled


def guard_mcp_server(
    server: MCPServer,
    policy_or_guard: PolicySource,
    *,
    approver: Any = None,
    identity: WhoLookup = None,
    session: WhoLookup = None,
    **guard_options: Any,
) -> MCPServer:
    """Put ``server`` (``MCPServerStdio``, ``MCPServerSse``, ``MCPServerStreamableHttp``, ...) under the policy.

    Configures the server in place and returns it (so ``async with guard_mcp_server(server, policy)``
    works): hidden and outright-denied tools are filtered from its tool list (composed with any
    ``tool_filter`` it has), every call passes the guardrail bound to ``server.name`` (so
    ``exchange/withdraw`` rules apply), admitted calls run with the admitted arguments and give their quota
    back when the server reports an error, and tools whose rule requires approval pause the run through
    the SDK (``result.interruptions``, ``state.approve()`` / ``state.reject()``) unless an inline
    ``approver`` decides. A direct ``server.call_tool(...)`` outside an agent run goes through the whole
    guard pipeline too.

    Guarding a server again replaces the earlier guard (its filter, guardrail and wrappers are removed
    first); :func:`unguard_mcp_server` removes it altogether.
    """
    unguard_mcp_server(server)
    guard = _build_guard(policy_or_guard, approver, guard_options)
    binding = _Binding(guard, server=server.name, identity=identity, session=session, wrapped=True)
    guardrail = _make_guardrail(binding, f"mcp_guard_policy[{server.name}]")
    _agents_mcp.install(server, binding, guardrail)
    _agents_private.extend_tool_lookup(_not_shown_tools)
    return server


def unguard_mcp_server(server: MCPServer) -> MCPServer:
    """Undo :func:`guard_mcp_server` on ``server`` (a no-op for a server that is not guarded); returns it."""
    _agents_mcp.uninstall(server)
    return server


def guard_run_config(
    policy_or_guard: PolicySource,
    run_config: RunConfig | None = None,
    *,
    identity: WhoLookup = None,
    session: WhoLookup = None,
    **guard_options: Any,
) -> RunConfig:
    """A ``RunConfig`` under which a model's call to a tool it was not shown gets the policy JSON, not a dead run.

    ``Runner.run(agent, input, run_config=guard_run_config(guard))`` (also ``run_sync``, ``run_streamed``, and when
    resuming from a ``RunState``). With ``run_config``, a copy of it (the original is untouched). It sets the SDK's
    public hooks: ``tool_not_found_behavior="return_error_to_model"`` and a ``tool_error_formatter`` that answers
    a call of a name no shown tool has, and writes that call's one audit event:

    - a tool a guard keeps back (:func:`guard_tools`, :func:`guard_mcp_server`): that guard's decision (``hidden``
      / ``denied``), for the server it was kept back for. Pass the same :class:`~mcp_guard.Guard` here as to the
      adapters; a tool kept back by another guard is answered by that guard, into its audit;
    - any other name: the policy's refusal if it refuses that name outright, else code ``hidden`` with the reason
      "no tool named ... is available to this agent" (no rule: the tool does not exist).

    The formatter's other kinds (``approval_rejected``, ``tool_exception``) go to the formatter ``run_config``
    had, else to the SDK's text. The SDK tells the formatter the tool's name and call id but not the arguments,
    so these events record none; and it cannot raise, so ``on_violation="raise"`` does not apply here.

    Without this ``RunConfig`` the adapters still answer such calls, through a private fallback
    (``_agents_private``) that needs a guard tied to the agent; with it, nothing private is involved.
    """
    guard = _build_guard(policy_or_guard, None, guard_options)
    binding = _Binding(guard, server=None, identity=identity, session=session, wrapped=False)
    base = run_config if run_config is not None else _agents.RunConfig()
    delegate = base.tool_error_formatter
    if isinstance(delegate, _agents_unknown.UnknownToolFormatter):  # guarded twice: the user's formatter, once
        delegate = delegate.delegate
    guarded: RunConfig = dataclasses.replace(
        base,
        tool_not_found_behavior="return_error_to_model",
        tool_error_formatter=_agents_unknown.UnknownToolFormatter(binding, delegate),
    )
    return guarded


def reject(state: Any, item: Any, reason: str | None = None, *, always: bool = False) -> None:
    """``state.reject(item)`` that tells the model in the policy's words and writes the call's audit event.

    The SDK never runs a guardrail or a tool for a call a human rejected, so mcp-guard does not see it:
    plain ``state.reject(item)`` uses no quota (right) but writes no audit event and gives the model the
    SDK's own text. This finds the guard of the tool ``item`` is for (a tool from :func:`guard_tools` or a
    server from :func:`guard_mcp_server` on the item's agent), and rejects with the ``approval_denied``
    violation JSON of spec section 5 as the rejection message, writing one audit event. For a tool that no
    mcp-guard adapter guards, it rejects with a plain ``approval_denied`` payload and writes nothing.
    """
    public = str(getattr(item, "tool_name", None) or getattr(item, "name", None) or "")
    args, _ = parse_args(getattr(item, "arguments", None))
    why = reason or "a human declined this call"
    binding = _binding_for(item, public)
    if binding is None:
        message = Decision.deny(public, "approval_denied", reason=why).to_json()
    else:
        tool = binding.raw_names.get(public, public)
        call_id = getattr(item, "call_id", None)
        who = binding.who(getattr(state, "_context", None), tool, call_id if isinstance(call_id, str) else None)
        call = ToolCall(tool, args if args is not None else {}, **who)
        refused = binding.guard.rejected(call, why)
        # No caller waits to catch an exception here: the message is the decision whatever on_violation says.
        message = binding.guard.refuse(call, refused, deliver=False).to_json()
    state.reject(item, always_reject=always, rejection_message=message)


# -- finding the guards of an agent -----------------------------------------------------------------------


def _guarded(agent: Any) -> Iterator[tuple[_Binding, Any, Any]]:
    """(binding, MCP server or None, FunctionTool or None) for each guarded server and tool of ``agent``."""
    for server in getattr(agent, "mcp_servers", None) or ():
        state = getattr(server, "__dict__", {}).get("_mcp_guard")
        if state is not None:
            yield state[0], server, None
    tools = getattr(agent, "tools", None)
    tied = getattr(tools, "mcp_guard_binding", None)
    if isinstance(tied, _Binding):  # guard_tools' list, perhaps with every tool kept back (so empty)
        yield tied, None, None
    for tool in tools or ():
        for guardrail in getattr(tool, "tool_input_guardrails", None) or ():
            owner = getattr(getattr(guardrail, "guardrail_function", None), "__self__", None)
            if isinstance(owner, _Binding):
                yield owner, None, tool


def _not_shown_tools(agent: Any, names: list[str]) -> list[Any]:
    """Tools to resolve calls of ``names``, which the SDK found among no tool shown to ``agent`` (the fallback for
    runs without :func:`guard_run_config`; see ``_agents_private.extend_tool_lookup``).

    A tool one of the agent's guards keeps back is its guarded self (its guardrail refuses the call, or admits it
    if a reload has since allowed it). Any other name gets a tool that only refuses: through a guard that keeps a
    tool of that name back (one not tied to this agent, e.g. a guard_tools list rebuilt into another list), else
    through the agent's first guard as an unknown tool. An agent no guard is tied to gets nothing for a name no
    guard keeps back: the SDK decides, as it would without mcp-guard.
    """
    owners = list({id(b): (b, s) for b, s, _ in _guarded(agent)}.values())
    prefer = owners[0][0].guard if owners else None
    extra: list[Any] = []
    for name in names:
        tool = next((t for b, s in owners if b.wrapped and (t := b.unlisted_tool(name, s, agent)) is not None), None)
        if tool is None:
            binding = _agents_unknown.keeper(name, prefer) or (owners[0][0] if owners else None)
            tool = _agents_unknown.refusing_tool(binding, name) if binding is not None else None
        if tool is not None:
            extra.append(tool)
    return extra


def _binding_for(item: Any, tool: str) -> _Binding | None:
    server_name = getattr(getattr(item, "tool_origin", None), "mcp_server_name", None)
    for binding, server, function_tool in _guarded(getattr(item, "agent", None)):
        if server_name is not None and server is not None and server.name == server_name:
            return binding
        if server_name is None and function_tool is not None and getattr(function_tool, "name", None) == tool:
            return binding
    return None
