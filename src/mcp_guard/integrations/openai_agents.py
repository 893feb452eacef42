"""OpenAI Agents SDK adapter: a policy tool input guardrail, guarded function tools, guarded MCP servers.

>>> from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, policy_guardrail
>>> server = guard_mcp_server(MCPServerStdio(params=..., name="exchange"), "policy.json")
>>> agent = Agent(name="a", tools=guard_tools([get_quote], "policy.json"), mcp_servers=[server])

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
  JSON; :func:`reject` does the same at once.
- **Tool list**: hidden and outright-denied tools are left out of what the model is shown (``tool_filter`` for
  MCP servers; left out of the list for function tools). A call to one anyway is answered by the guard
  (``hidden`` / ``denied``, audited) and the run goes on: see :func:`_install_unlisted_lookup`.

Known limits (the SDK decides these, not us): a tool wired to the SDK's approval flow whose arguments are
not a JSON object is held for a human first (the SDK cannot hand such arguments to ``needs_approval``), and
is refused with ``invalid_arguments`` after approval; a call our guardrail admitted that the SDK then never
starts (its task cancelled) keeps its reserved quota until the window passes and writes no audit event.
What this module reads of the SDK's internals lives in :mod:`mcp_guard.integrations._agents_sdk`.

Identity and session come from the run context (``Runner.run(..., context=...)``): a ``user_id`` /
``session_id`` key of a mapping or attribute of an object, unless ``identity=`` / ``session=`` is a string or
a callable taking that context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcp_guard._adapt import Bounded, WhoLookup, delivered, is_violation, lookup, parse_args, without_required
from mcp_guard._compat import error_result, tool_annotations, tool_input_schema
from mcp_guard._decision import Decision
from mcp_guard._errors import PolicyViolation, require_extra
from mcp_guard._guard import Admission, Guard, PolicySource, ToolCall, as_guard
from mcp_guard.integrations import _agents_sdk as sdk

_agents = require_extra("agents", "openai-agents", "mcp_guard.integrations.openai_agents")

if TYPE_CHECKING:
    from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrail, ToolInputGuardrailData
    from agents.mcp import MCPServer
    from agents.mcp.util import ToolFilterContext

__all__ = ["guard_mcp_server", "guard_tools", "policy_guardrail", "reject", "unguard_mcp_server"]

log = logging.getLogger("mcp_guard")

# What the guardrail reports in ``output_info`` when it lets a call through (shared: read-only).
_ADMITTED = {"mcp_guard": "admitted"}
_AWAITING = {"mcp_guard": "awaiting approval"}
# The MCP ``_meta`` key that carries an admitted call from our guardrail to our ``call_tool`` (never sent).
_CALL_KEY = "mcp_guard/admitted"


def _annotations_of(tool: Any) -> dict[str, Any] | None:
    """MCP ToolAnnotations (an MCP tool's ``.annotations`` or a FunctionTool's ``.mcp_annotations``) as a dict."""
    raw = getattr(tool, "annotations", None)
    return tool_annotations(raw if raw is not None else getattr(tool, "mcp_annotations", None))


def _function_tool_schema(tool: Any) -> Any:
    """The schema the Guard checks a FunctionTool's arguments against: ``params_json_schema``, types strictly.

    A tool in the SDK's strict mode lists every parameter as required (the model must send them all), but
    the SDK itself fills in defaults for a missing one; only the types are the Guard's business, so
    ``required`` is dropped from a strict schema rather than refusing calls the tool would run.
    """
    schema = getattr(tool, "params_json_schema", None)
    if not isinstance(schema, Mapping):
        return None
    return without_required(schema) if getattr(tool, "strict_json_schema", False) else schema


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class _Binding:
    """One guard bound to one place (a server name, or none) and to the run context lookups."""

    def __init__(self, guard: Guard, *, server: str | None, identity: WhoLookup, session: WhoLookup, wrapped: bool):
        self.guard = guard
        self.server = server
        self.identity = identity
        self.session = session
        # True when an execution wrapper (guard_tools / guard_mcp_server) will run and finish the call.
        self.wrapped = wrapped
        self.annotations: dict[str, dict[str, Any] | None] = {}
        # Each tool's declared input schema (MCP inputSchema seen at list time, a FunctionTool's
        # params_json_schema), checked strictly by the Guard before the policy (spec section 8).
        self.schemas: dict[str, Any] = {}
        # Tools the policy keeps from the model, by every name a model could call them: MCP tools as listed,
        # guarded FunctionTools. A call to one runs through the guard (refused, audited) instead of ending the run.
        self.unlisted: dict[str, Any] = {}
        # Public tool name -> the MCP tool's own name, for agents that prefix MCP tool names with the server
        # (mcp_config={"include_server_in_tool_names": True}): rules are written for the server's names.
        self.raw_names: dict[str, str] = {}
        # Calls our guardrail admitted, for the execution wrapper. The SDK hands the guardrail and the tool one
        # ToolContext object per call, so it is the key (held in the entry, so its id is not reused meanwhile);
        # an MCP call_tool gets the key through the call's _meta. Bounded: a call the SDK never starts.
        self.admitted: Bounded[int, tuple[Any, Admission, bool]] = Bounded()
        # Calls our needs_approval held for a human, by call id: the check it made (None when the tool's own
        # setting asked), so the SDK's pre-approval guardrail pass need not check again ...
        self.asked: Bounded[str, Decision | None] = Bounded()
        # ... and their arguments, so a plain state.reject() can be audited with them.
        self.held: Bounded[str, Mapping[str, Any]] = Bounded()

    def saw_mcp_tool(self, tool: Any) -> dict[str, Any] | None:
        """Remember an MCP tool's annotations and the public names the SDK may give it; return the annotations."""
        annotations = self.annotations[tool.name] = _annotations_of(tool)
        schema = tool_input_schema(tool)
        if schema is not None:
            self.schemas[tool.name] = schema
        if self.server is not None and tool.name not in self.raw_names:
            for public in sdk.prefixed_names(self.server, tool.name):
                self.raw_names.setdefault(public, tool.name)
        return annotations

    def who(self, run_context: Any, tool: str, call_id: str | None = None) -> dict[str, Any]:
        """The Guard's keyword arguments for a call of ``tool``: who, where, the schema, the SDK's ids."""
        user_context = getattr(run_context, "context", None)
        return {
            "server": self.server,
            "identity": lookup(self.identity, user_context, "user_id"),
            "session": lookup(self.session, user_context, "session_id"),
            "annotations": self.annotations.get(tool),
            "tool_schema": self.schemas.get(tool),
            "call_id": call_id if call_id is not None else getattr(run_context, "tool_call_id", None),
            "run_id": sdk.run_id(),
        }

    def may_need_approval(self, tool: str, annotations: Mapping[str, Any] | None) -> bool:
        """Whether a call of ``tool`` can be held for a human (decides ``needs_approval`` wiring).

        Wiring matters beyond cost: the SDK holds *every* call of a tool with a ``needs_approval`` callable whose
        arguments are not a JSON object for a human, instead of letting the guardrail answer ``invalid_arguments``.
        """
        return self.guard.policy.may_require_approval(tool, server=self.server, annotations=annotations)

    def take(self, key: Any, tool: str) -> tuple[Any, Admission, bool] | None:
        """The admission our guardrail made for this call of ``tool``, handed over once."""
        entry = self.admitted.get(key)
        if entry is None or entry[1].call.tool != tool:
            return None
        del self.admitted[key]
        return entry

    async def note_rejections(self, run_context: Any) -> None:
        """Audit the calls of our tools that a human rejected, and tell the model in the policy's words.

        The SDK runs none of our code for a call ``state.reject(item)`` refused; but on resume it lists the
        agent's tools (``tool_filter`` / ``is_enabled``) with the run context that holds the rejections, before
        it resolves the rejected calls' messages. Here each rejection not yet seen writes one audit event and
        its message becomes the ``approval_denied`` JSON (the human's message, if any, is its reason). A
        message that is already a violation JSON (our own :func:`reject`) marks a call as done.
        """
        try:
            for public, call_id, messages in sdk.rejections(run_context):
                tool = self.raw_names.get(public, public)
                message = messages.get(call_id)
                if tool not in self.annotations or (message is not None and is_violation(message)):
                    continue  # not a tool of this binding, or already told
                call = ToolCall(tool, self.held.pop(call_id, {}), **self.who(run_context, tool, call_id))
                refused = self.guard.rejected(call, message or "a human declined this call")
                with contextlib.suppress(PolicyViolation):  # recorded after the fact: nobody to raise to
                    await self.guard.arefuse(call, refused)
                messages[call_id] = refused.to_json()
        except Exception:  # never end a run over an audit of a rejection; the SDK's own message stands
            log.exception("could not audit a rejected tool call")

    def unlisted_tool(self, name: str, server: Any, agent: Any) -> Any:
        """A FunctionTool for ``name`` if this binding keeps it from the model, else None.

        Not shown to the model; added only to the SDK's lookup when the model calls it anyway, so the call goes
        through the guard (refused as ``hidden`` / ``denied`` and audited) and the run goes on.
        """
        found = self.unlisted.get(self.raw_names.get(name, name))
        if found is None or server is None:
            return found  # a guarded FunctionTool (guard_tools), or nothing
        return sdk.mcp_function_tool(found, server, agent, name)

    # -- the guardrail ---------------------------------------------------------------------------------

    async def guardrail(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        public, call_id = ctx.tool_name, ctx.tool_call_id
        tool = self.raw_names.get(public, public)
        if tool not in self.schemas:
            await self._learn_schema(data, public, tool)
        guard, who = self.guard, self.who(ctx, tool)
        args, problem = parse_args(ctx.tool_arguments)
        if args is None:
            return await self._refuse(ToolCall(tool, {}, **who), guard.malformed(tool, problem, server=self.server))

        status = sdk.approval_status(ctx, public, call_id)
        asked = self.asked.pop(call_id, False)
        if status is None and asked is not False and guard.approver is None:
            # The SDK's pre-approval pass: the run is about to pause for a human. Reserve nothing; the check
            # our needs_approval made a moment ago stands (made here when the tool's own setting asked).
            checked = asked if asked is not None else await guard.acheck(tool, args, **who)
            if checked.denied:
                return await self._refuse(ToolCall(tool, args, **who), checked)
            return _out().allow(output_info=_AWAITING)

        admission = await guard.aadmit(tool, args, approval=True if status else None, **who)
        if not admission.admitted:
            await guard.afinish(admission, "denied")
            return self._verdict(admission.decision)
        if self.wrapped:
            self.admitted[id(ctx)] = (ctx, admission, admission.call.args is not args)
            return _out().allow(output_info=_ADMITTED)
        # A bare guardrail cannot see the tool run: the call counts as made, and edited arguments cannot
        # be applied, so an edit is refused rather than silently running the model's original arguments.
        if admission.call.args != args:
            await guard.afinish(admission, "denied")  # not run: gives all the reserved quota back
            return self._verdict(
                admission.decision.violation(
                    "approval_denied",
                    reason="the approver edited the arguments, which a bare policy_guardrail cannot apply; "
                    "use guard_tools or guard_mcp_server",
                )
            )
        await guard.afinish(admission, "admitted")
        return _out().allow(output_info=_ADMITTED)

    async def _learn_schema(self, data: Any, public: str, tool: str) -> None:
        """Find the input schema of a tool this guardrail meets for the first time (a bare policy_guardrail).

        A FunctionTool of the agent carries ``params_json_schema``; an MCP tool's ``inputSchema`` is read once
        from the agent's MCP server of this binding's name. Not found: the policy alone decides (None is kept).
        """
        agent = getattr(data, "agent", None)
        schema: Any = None
        for candidate in getattr(agent, "tools", None) or ():
            if getattr(candidate, "name", None) == public and isinstance(candidate, _agents.FunctionTool):
                schema = _function_tool_schema(candidate)
                break
        else:
            for server in getattr(agent, "mcp_servers", None) or ():
                if self.server is None or getattr(server, "name", None) != self.server:
                    continue
                try:
                    listed = await server.list_tools()
                except Exception:  # a filter that needs a run context, a server gone: no schema, no crash
                    log.warning("could not list the tools of MCP server %s for their input schemas", self.server)
                    break
                for mcp_tool in listed:
                    self.schemas.setdefault(mcp_tool.name, tool_input_schema(mcp_tool))
                break
        self.schemas.setdefault(tool, schema)

    async def _refuse(self, call: ToolCall, decision: Decision) -> ToolGuardrailFunctionOutput:
        with contextlib.suppress(PolicyViolation):  # the SDK's own way to raise: see _verdict
            await self.guard.arefuse(call, decision)
        return self._verdict(decision)

    def _verdict(self, decision: Decision) -> ToolGuardrailFunctionOutput:
        """The guard's ``on_violation`` in the SDK's terms: ``raise`` trips the guardrail, else ``reject_content``."""
        try:
            self.guard.violation(decision)
        except PolicyViolation:
            return _out().raise_exception(output_info=decision.to_payload())
        return _out().reject_content(decision.to_json(), output_info=decision.to_payload())

    async def run_unadmitted(
        self, tool: str, ctx: Any, input_json: str, invoke: Callable[[str], Awaitable[Any]]
    ) -> Any:
        """The whole guard pipeline around a function tool reached without our guardrail's admission."""
        who = self.who(ctx, tool)
        args, problem = parse_args(input_json)
        if args is None:
            refused = await self.guard.arefuse(
                ToolCall(tool, {}, **who), self.guard.malformed(tool, problem, server=self.server)
            )
            return refused.to_json()
        result = await self.guard.arun(tool, args, lambda **kw: invoke(json.dumps(kw)), **who)
        return result.value if result.violation is None else self.guard.violation(result.violation).to_json()


def _out() -> type[ToolGuardrailFunctionOutput]:
    output_cls: type[ToolGuardrailFunctionOutput] = _agents.ToolGuardrailFunctionOutput
    return output_cls


def _build_guard(policy_or_guard: PolicySource, approver: Any, guard_options: dict[str, Any]) -> Guard:
    if approver is not None:
        if isinstance(policy_or_guard, Guard):
            raise TypeError("approver= is for a new Guard; pass Guard(..., approver=...) instead")
        guard_options = {**guard_options, "approver": approver}
    return as_guard(policy_or_guard, **guard_options)


def _make_guardrail(binding: _Binding, name: str) -> ToolInputGuardrail[Any]:
    guardrail: ToolInputGuardrail[Any] = _agents.ToolInputGuardrail(guardrail_function=binding.guardrail, name=name)
    return guardrail


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
    the run. :func:`guard_tools` and :func:`guard_mcp_server` do all three properly.
    """
    guard = _build_guard(policy_or_guard, approver, guard_options)
    binding = _Binding(guard, server=server, identity=identity, session=session, wrapped=False)
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
    """
    guard = _build_guard(policy_or_guard, approver, guard_options)
    binding = _Binding(guard, server=server, identity=identity, session=session, wrapped=True)
    guardrail = _make_guardrail(binding, "mcp_guard_policy")
    guarded: list[Any] = []
    for tool in tools:
        if not isinstance(tool, _agents.FunctionTool):
            guarded.append(tool)
            continue
        annotations = binding.annotations[tool.name] = _annotations_of(tool)
        binding.schemas[tool.name] = _function_tool_schema(tool)
        wrapped = _guard_function_tool(tool, binding, guardrail, annotations)
        if guard.exposes(tool.name, server=server, annotations=annotations):
            guarded.append(wrapped)
        else:
            # Kept from the model, but a call to it is answered by the guard (hidden / denied), not the SDK.
            binding.unlisted[tool.name] = wrapped
    sdk.extend_tool_lookup(_unlisted_tools)
    return guarded


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
        try:
            result = await original(ctx, json.dumps(dict(admission.call.args)) if edited else input_json)
        except BaseException as exc:
            await guard.afinish(admission, "error", error=exc)
            raise
        # The SDK turns a raising tool into an error message for the model and marks the context.
        failed = bool(getattr(ctx, "_function_tool_default_failure_handled", False))
        await guard.afinish(admission, "error" if failed else "ok")
        return result

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


def _compose_needs_approval(
    binding: _Binding, tool: str, existing: Any
) -> Callable[[Any, dict[str, Any], str], Awaitable[bool]]:
    """Our per-call answer, or-ed with an approval setting the tool already had (never weakened)."""

    async def needs_approval(run_context: Any, params: dict[str, Any], call_id: str) -> bool:
        checked: Decision | None = None
        if not (callable(existing) and await _maybe_await(existing(run_context, params, call_id))):
            checked = await binding.guard.acheck(tool, params, **binding.who(run_context, tool, call_id))
            if not checked.needs_approval:
                binding.asked.pop(call_id, None)
                return False
        binding.asked[call_id] = checked
        binding.held[call_id] = params if isinstance(params, Mapping) else {}
        return True

    return needs_approval


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
    target: Any = server
    # What to put back on unguard: the attributes we replace, as they were (instance dict entries or absent).
    saved = {name: target.__dict__.get(name, _ABSENT) for name in _REPLACED}
    target.tool_input_guardrails = [*(server.tool_input_guardrails or []), guardrail]
    _install_tool_filter(target, binding)
    _install_needs_approval(target, binding)
    _install_call_tool(target, binding)
    target._mcp_guard = (binding, saved)
    sdk.extend_tool_lookup(_unlisted_tools)
    return server


_ABSENT = object()
_REPLACED = (
    "tool_input_guardrails",
    "tool_filter",
    "list_tools",
    "_get_needs_approval_for_tool",
    "call_tool",
    "tool_meta_resolver",
)


def unguard_mcp_server(server: MCPServer) -> MCPServer:
    """Undo :func:`guard_mcp_server` on ``server`` (a no-op for a server that is not guarded); returns it."""
    target: Any = server
    state = target.__dict__.pop("_mcp_guard", None)
    if state is None:
        return server
    _, saved = state
    for name, value in saved.items():
        if value is _ABSENT:
            target.__dict__.pop(name, None)
        else:
            target.__dict__[name] = value
    return server


def _install_tool_filter(server: Any, binding: _Binding) -> None:
    """Hidden and outright-denied tools leave the listing (remembered for :meth:`_Binding.unlisted_tool`),
    through the server's ``tool_filter`` (composed with its own) or, without one, around ``list_tools``."""

    def shown(tool: Any) -> bool:
        if binding.guard.exposes(tool.name, server=binding.server, annotations=binding.saw_mcp_tool(tool)):
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
    # this instance instead; an approval the server itself already requires is kept.
    original = server._get_needs_approval_for_tool

    def get_needs_approval(tool: Any, agent: Any) -> Any:
        existing = original(tool, agent)
        if binding.guard.approver is not None or existing is True:
            return existing
        if not binding.may_need_approval(tool.name, binding.saw_mcp_tool(tool)):
            return existing
        return _compose_needs_approval(binding, tool.name, existing if callable(existing) else None)

    server._get_needs_approval_for_tool = get_needs_approval


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
        try:
            value = await raw_call(**admission.call.args)
        except BaseException as exc:
            await guard.afinish(admission, "error", error=exc)
            raise
        await guard.afinish(admission, "error" if guard.is_error_result(value) else "ok")
        return value

    server.call_tool = call_tool
    server.tool_meta_resolver = tool_meta_resolver


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
        message = delivered(lambda: binding.guard.refuse(call, refused)).to_json()
    state.reject(item, always_reject=always, rejection_message=message)


# -- finding the guards of an agent -----------------------------------------------------------------------


def _guarded(agent: Any) -> Iterator[tuple[_Binding, Any, Any]]:
    """(binding, MCP server or None, FunctionTool or None) for each guarded server and tool of ``agent``."""
    for server in getattr(agent, "mcp_servers", None) or ():
        state = getattr(server, "__dict__", {}).get("_mcp_guard")
        if state is not None:
            yield state[0], server, None
    for tool in getattr(agent, "tools", None) or ():
        for guardrail in getattr(tool, "tool_input_guardrails", None) or ():
            owner = getattr(getattr(guardrail, "guardrail_function", None), "__self__", None)
            if isinstance(owner, _Binding):
                yield owner, None, tool


def _unlisted_tools(agent: Any, names: list[str]) -> list[Any]:
    """Tools the agent's guards keep from the model, for the calls to ``names`` the SDK cannot find."""
    owners = list({id(b): (b, s) for b, s, _ in _guarded(agent) if b.wrapped}.values())
    extra: list[Any] = []
    for name in names:
        for binding, server in owners:
            tool = binding.unlisted_tool(name, server, agent)
            if tool is not None:
                extra.append(tool)
                break
    return extra


def _binding_for(item: Any, tool: str) -> _Binding | None:
    server_name = getattr(getattr(item, "tool_origin", None), "mcp_server_name", None)
    for binding, server, function_tool in _guarded(getattr(item, "agent", None)):
        if server_name is not None and server is not None and server.name == server_name:
            return binding
        if server_name is None and function_tool is not None and getattr(function_tool, "name", None) == tool:
            return binding
    return None
