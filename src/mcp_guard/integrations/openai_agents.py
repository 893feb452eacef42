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

Identity and session come from the run context (``Runner.run(..., context=...)``): a ``user_id`` /
``session_id`` key of a mapping or attribute of an object, unless ``identity=`` / ``session=`` is a string or
a callable taking that context.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_guard._compat import error_result, result_is_error, tool_annotations, tool_input_schema
from mcp_guard._decision import Decision
from mcp_guard._errors import PolicyViolation, require_extra
from mcp_guard._guard import Admission, Guard, GuardResult, PolicySource, ToolCall, as_guard

_agents = require_extra("agents", "openai-agents", "mcp_guard.integrations.openai_agents")

if TYPE_CHECKING:
    from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrail, ToolInputGuardrailData
    from agents.mcp import MCPServer
    from agents.mcp.util import ToolFilterContext


log = logging.getLogger("mcp_guard")

#: How identity / session are found: a fixed string, or a callable taking the run context object.
WhoLookup = str | Callable[[Any], str | None] | None

__all__ = ["guard_mcp_server", "guard_tools", "policy_guardrail", "reject", "unguard_mcp_server"]

# Admitted calls waiting for the execution wrapper. The SDK runs a tool's input guardrails inline and then
# starts the tool in a new asyncio task, which copies this context: the wrapper of *this* call, and no
# other, sees the admission its guardrail made (parallel tool calls each run in their own task).
_PENDING: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar("mcp_guard_agents_pending", default=None)

# needs_approval answers we gave, by call id, so the guardrail can tell the SDK's pre-approval pass
# (RunConfig tool_execution pre_approval_tool_input_guardrails) from an execution. Bounded: answers whose
# call never reaches a guardrail (the run was abandoned) must not pile up.
_ASKED_MAX = 10_000

# What the guardrail reports in ``output_info`` when it lets a call through (shared: read-only).
_ADMITTED = {"mcp_guard": "admitted"}
_AWAITING = {"mcp_guard": "awaiting approval"}


@dataclass(slots=True)
class _Pending:
    call_id: str
    tool: str
    admission: Admission
    edited: bool  # an approver changed the arguments: run admission.call.args, not the model's
    consumed: bool = False


def _lookup(spec: WhoLookup, context: Any, key: str) -> str | None:
    if isinstance(spec, str):
        return spec
    if spec is not None:
        value = spec(context)
        return None if value is None else str(value)
    found = context.get(key) if isinstance(context, Mapping) else getattr(context, key, None)
    return None if found is None else str(found)


def _annotations_of(tool: Any) -> dict[str, Any] | None:
    """MCP ToolAnnotations (an MCP tool's ``.annotations`` or a FunctionTool's ``.mcp_annotations``) as a dict."""
    raw = getattr(tool, "annotations", None)
    if raw is None:
        raw = getattr(tool, "mcp_annotations", None)
    return tool_annotations(raw)


def _function_tool_schema(tool: Any) -> Any:
    """The schema the Guard checks a FunctionTool's arguments against: ``params_json_schema``, types strictly.

    A tool in the SDK's strict mode lists every parameter as required (the model must send them all), but
    the SDK itself fills in defaults for a missing one; only the types are the Guard's business, so
    ``required`` is dropped from a strict schema rather than refusing calls the tool would run.
    """
    schema = getattr(tool, "params_json_schema", None)
    if not isinstance(schema, Mapping):
        return None
    return _without_required(schema) if getattr(tool, "strict_json_schema", False) else schema


def _without_required(node: Any) -> Any:
    if isinstance(node, Mapping):
        # A property may be named "required" too: only the keyword (a list of names) goes.
        return {k: _without_required(v) for k, v in node.items() if k != "required" or not isinstance(v, list)}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def _run_id() -> str | None:
    """The Agents SDK's id for this run: its trace id, when tracing is on (the SDK has no other run id)."""
    try:
        from agents.tracing import get_current_trace

        trace = get_current_trace()
    except Exception:  # another SDK version: no run id rather than a failed call
        return None
    trace_id = getattr(trace, "trace_id", None)
    return trace_id if isinstance(trace_id, str) and trace_id != "no-op" else None


def _parse_args(raw: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The model's argument text as an object, or ``None`` and why not."""
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


class _Binding:
    """One guard bound to one place (a server name, or none) and to the run context lookups."""

    def __init__(
        self,
        guard: Guard,
        *,
        server: str | None,
        identity: WhoLookup,
        session: WhoLookup,
        wrapped: bool,
    ) -> None:
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
        self._asked: OrderedDict[str, bool] = OrderedDict()
        self._held: OrderedDict[str, tuple[str, Mapping[str, Any]]] = OrderedDict()

    def saw_mcp_tool(self, tool: Any) -> dict[str, Any] | None:
        """Remember an MCP tool's annotations and the public names the SDK may give it; return the annotations."""
        annotations = _annotations_of(tool)
        self.annotations[tool.name] = annotations
        schema = tool_input_schema(tool)
        if schema is not None:
            self.schemas[tool.name] = schema
        if self.server is not None and tool.name not in self.raw_names:
            for public in _prefixed_names(self.server, tool.name):
                self.raw_names.setdefault(public, tool.name)
        return annotations

    # -- who is calling -------------------------------------------------------------------------------

    def who(self, run_context: Any, tool: str, call_id: str | None = None) -> dict[str, Any]:
        """The Guard's keyword arguments for a call of ``tool``: who, where, the schema, the SDK's ids."""
        user_context = getattr(run_context, "context", None)
        if call_id is None:
            call_id = getattr(run_context, "tool_call_id", None)
        return {
            "server": self.server,
            "identity": _lookup(self.identity, user_context, "user_id"),
            "session": _lookup(self.session, user_context, "session_id"),
            "annotations": self.annotations.get(tool),
            "tool_schema": self.schemas.get(tool),
            "call_id": call_id,
            "run_id": _run_id(),
        }

    # -- approvals through the SDK ---------------------------------------------------------------------

    def may_need_approval(self, tool: str, annotations: Mapping[str, Any] | None) -> bool:
        """Whether a call of ``tool`` can be held for a human (decides ``needs_approval`` wiring).

        Wiring matters beyond cost: the SDK holds *every* call of a tool with a ``needs_approval`` callable whose
        arguments are not a JSON object for a human, instead of letting the guardrail answer ``invalid_arguments``.
        """
        return self.guard.policy.may_require_approval(tool, server=self.server, annotations=annotations)

    def remember(self, call_id: str, asked: bool, tool: str | None = None, args: Any = None) -> None:
        self._asked[call_id] = asked
        while len(self._asked) > _ASKED_MAX:
            self._asked.popitem(last=False)
        if asked and tool is not None:
            # What a human is asked about, so a plain state.reject() can be audited with its arguments.
            self._held[call_id] = (tool, args if isinstance(args, Mapping) else {})
            while len(self._held) > _ASKED_MAX:
                self._held.popitem(last=False)

    def malformed(self, tool: str, problem: str | None) -> Decision:
        """The refusal for argument text that is not a JSON object (the policy never sees such a call)."""
        return Decision.deny(
            tool, "invalid_arguments", server=self.server, reason=problem, policy=self.guard.policy.hash
        )

    # -- calls a human rejected with plain state.reject() ------------------------------------------------

    def rejection(self, tool: str, args: Mapping[str, Any], who: Mapping[str, Any], why: str) -> Decision:
        """The ``approval_denied`` violation for a rejected call, naming the rule that asked for approval."""
        decision = self.guard.policy.evaluate(
            tool,
            args,
            server=who["server"],
            identity=who["identity"],
            session=who["session"],
            annotations=who["annotations"],
        )
        return decision.violation("approval_denied", reason=why)

    async def note_rejections(self, run_context: Any) -> None:
        """Audit the calls of our tools that a human rejected, and tell the model in the policy's words.

        The SDK runs none of our code for a call ``state.reject(item)`` refused; but on resume it lists the
        agent's tools (``tool_filter`` / ``is_enabled``) with the run context that holds the rejections, before
        it resolves the rejected calls' messages. Here each rejection not yet seen writes one audit event and
        its message becomes the ``approval_denied`` JSON (the human's message, if any, is its reason). A
        message that is already a violation JSON (our own :func:`reject`) marks a call as done.
        """
        approvals = getattr(run_context, "_approvals", None)
        if not approvals:
            return
        try:
            for key, record in list(approvals.items()):
                rejected = getattr(record, "rejected", None)
                if not isinstance(rejected, list) or not rejected or not isinstance(key, str):
                    continue
                public = _approval_tool_name(key)
                tool = self.raw_names.get(public, public)
                if tool not in self.annotations:  # not a tool of this binding
                    continue
                messages: dict[str, str] = record.rejection_messages
                for call_id in rejected:
                    message = messages.get(call_id)
                    if message is not None and _is_violation(message):
                        continue
                    _, args = self._held.pop(call_id, (tool, {}))
                    who = self.who(run_context, tool, call_id)
                    refused = self.rejection(tool, args, who, message or "a human declined this call")
                    messages[call_id] = refused.to_json()
                    await self.guard.afinish(Admission(ToolCall(tool, args, **who), refused), "denied")
        except Exception:  # never end a run over an audit of a rejection; the SDK's own message stands
            log.exception("could not audit a rejected tool call")

    # -- tools kept from the model ---------------------------------------------------------------------

    def unlisted_tool(self, name: str, server: Any, agent: Any) -> Any:
        """A FunctionTool for ``name`` if this binding keeps it from the model, else None.

        Not shown to the model; added only to the SDK's lookup when the model calls it anyway, so the call goes
        through the guard (refused as ``hidden`` / ``denied`` and audited) and the run goes on.
        """
        raw = self.raw_names.get(name, name)
        found = self.unlisted.get(raw)
        if found is None or server is None:
            return found  # a guarded FunctionTool (guard_tools), or nothing
        from agents.mcp.util import MCPUtil

        config = getattr(agent, "mcp_config", None) or {}
        options: dict[str, Any] = {"tool_name_override": name}
        if "failure_error_function" in config:
            options["failure_error_function"] = config["failure_error_function"]
        return MCPUtil.to_function_tool(
            found, server, bool(config.get("convert_schemas_to_strict", False)), agent, **options
        )

    # -- the guardrail ---------------------------------------------------------------------------------

    async def guardrail(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        public, call_id = ctx.tool_name, ctx.tool_call_id
        tool = self.raw_names.get(public, public)
        if tool not in self.schemas:
            await self._learn_schema(data, public, tool)
        who = self.who(ctx, tool)
        args, problem = _parse_args(ctx.tool_arguments)
        if args is None:
            decision = self.malformed(tool, problem)
            return await self._refuse(Admission(ToolCall(tool, {}, **who), decision))

        status = _approval_status(ctx, public, call_id)
        asked = self._asked.pop(call_id, None)
        if status is None and asked is True and self.guard.approver is None:
            # The SDK's pre-approval pass: the run is about to pause for a human. Check, reserve nothing.
            checked = await self.guard.acheck(tool, args, **who)
            if checked.denied:
                return await self._refuse(Admission(ToolCall(tool, args, **who), checked))
            return _out().allow(output_info=_AWAITING)

        admission = await self.guard.aadmit(tool, args, approval=True if status else None, **who)
        if not admission.admitted:
            return await self._refuse(admission)
        if self.wrapped:
            _PENDING.set(_Pending(call_id, tool, admission, edited=admission.call.args is not args))
            return _out().allow(output_info=_ADMITTED)
        # A bare guardrail cannot see the tool run: the call counts as made, and edited arguments cannot
        # be applied, so an edit is refused rather than silently running the model's original arguments.
        if admission.call.args != args:
            await self.guard.afinish(admission, "denied")  # not run: gives all the reserved quota back
            refused = admission.decision.violation(
                "approval_denied",
                reason="the approver edited the arguments, which a bare policy_guardrail cannot apply; "
                "use guard_tools or guard_mcp_server",
            )
            return self._verdict(refused)
        await self.guard.afinish(admission, "admitted")
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

    async def _refuse(self, admission: Admission) -> ToolGuardrailFunctionOutput:
        await self.guard.afinish(admission, "denied")
        return self._verdict(admission.decision)

    def _verdict(self, decision: Decision) -> ToolGuardrailFunctionOutput:
        if self.guard.on_violation == "raise":
            return _out().raise_exception(output_info=decision.to_payload())
        return _out().reject_content(decision.to_json(), output_info=decision.to_payload())

    # -- running an admitted call ----------------------------------------------------------------------

    async def run_unadmitted(
        self, tool: str, ctx: Any, input_json: str, invoke: Callable[[str], Awaitable[Any]]
    ) -> Any:
        """The whole guard pipeline around a function tool reached without our guardrail's admission."""
        who = self.who(ctx, tool)
        args, problem = _parse_args(input_json)
        if args is None:
            decision = self.malformed(tool, problem)
            await self.guard.afinish(Admission(ToolCall(tool, {}, **who), decision), "denied")
            result = GuardResult(violation=decision)
        else:
            result = await self.guard.arun(tool, args, lambda **kw: invoke(json.dumps(kw)), **who)
        if result.violation is None:
            return result.value
        if self.guard.on_violation == "raise":
            raise PolicyViolation(result.violation)
        return result.violation.to_json()

    def take_pending(self, tool: str, call_id: str | None = None) -> _Pending | None:
        pending = _PENDING.get()
        if pending is None or pending.consumed or pending.tool != tool:
            return None
        if call_id is not None and pending.call_id != call_id:
            return None
        pending.consumed = True
        return pending


def _prefixed_names(server: str, tool: str) -> tuple[str, ...]:
    """The names the SDK gives ``tool`` of ``server`` when it prefixes MCP tool names (its own naming rule)."""
    try:
        from agents.mcp._logging import get_mcp_server_log_name
        from agents.mcp.util import MCPUtil

        name = get_mcp_server_log_name(server)
        base = MCPUtil._build_prefixed_tool_base_name(name, tool)
        return (base, MCPUtil._shorten_tool_name(base, f"{name}\0{tool}"))
    except Exception:  # another SDK version: fall back to the documented shape
        return (f"mcp_{server}__{tool}",)


def _out() -> type[ToolGuardrailFunctionOutput]:
    output_cls: type[ToolGuardrailFunctionOutput] = _agents.ToolGuardrailFunctionOutput
    return output_cls


def _approval_status(ctx: Any, tool: str, call_id: str) -> bool | None:
    """What a human said about this call through the SDK (``state.approve`` / ``state.reject``), if anything."""
    if not getattr(ctx, "_approvals", True):  # nothing was approved or rejected in this run: skip the lookup
        return None
    is_approved = getattr(ctx, "is_tool_approved", None)
    if not callable(is_approved):
        return None
    status = is_approved(tool, call_id)
    return status if isinstance(status, bool) else None


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
        annotations = _annotations_of(tool)
        binding.annotations[tool.name] = annotations
        binding.schemas[tool.name] = _function_tool_schema(tool)
        wrapped = _guard_function_tool(tool, binding, guardrail, annotations)
        if guard.exposes(tool.name, server=server, annotations=annotations):
            guarded.append(wrapped)
        else:
            # Kept from the model, but a call to it is answered by the guard (hidden / denied), not the SDK.
            binding.unlisted[tool.name] = wrapped
    _install_unlisted_lookup()
    return guarded


def _guard_function_tool(
    tool: FunctionTool, binding: _Binding, guardrail: ToolInputGuardrail[Any], annotations: Mapping[str, Any] | None
) -> FunctionTool:
    original = tool.on_invoke_tool
    guard = binding.guard

    async def invoke(ctx: Any, input_json: str) -> Any:
        pending = binding.take_pending(tool.name, getattr(ctx, "tool_call_id", None))
        if pending is None:
            # Not admitted by our guardrail (called outside the runner, or after a guardrail that does not
            # belong to us let it through without ours running): the whole pipeline runs here instead.
            return await binding.run_unadmitted(tool.name, ctx, input_json, lambda text: original(ctx, text))
        admission = pending.admission
        text = json.dumps(dict(admission.call.args)) if pending.edited else input_json
        try:
            result = await original(ctx, text)
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
        if isinstance(original, bool):
            return original
        answer = original(run_context, agent)
        if hasattr(answer, "__await__"):
            answer = await answer
        return bool(answer)

    return is_enabled


def _compose_needs_approval(
    binding: _Binding, tool: str, existing: Any
) -> Callable[[Any, dict[str, Any], str], Awaitable[bool]]:
    """Our per-call answer, or-ed with an approval setting the tool already had (never weakened)."""

    async def needs_approval(run_context: Any, params: dict[str, Any], call_id: str) -> bool:
        if callable(existing):
            answer = existing(run_context, params, call_id)
            if hasattr(answer, "__await__"):
                answer = await answer
            if answer:
                binding.remember(call_id, True, tool, params)
                return True
        decision = await binding.guard.acheck(tool, params, **binding.who(run_context, tool, call_id))
        binding.remember(call_id, decision.needs_approval, tool, params)
        return decision.needs_approval

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
    _install_unlisted_lookup()
    return server


_ABSENT = object()
_REPLACED = ("tool_input_guardrails", "tool_filter", "list_tools", "_get_needs_approval_for_tool", "call_tool")


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
    existing = getattr(server, "tool_filter", None)
    if not hasattr(server, "tool_filter"):
        # MCP server classes without a tool_filter (custom subclasses): filter their listing directly.
        _install_list_filter(server, binding)
        return

    async def tool_filter(ctx: ToolFilterContext, tool: Any) -> bool:
        await binding.note_rejections(getattr(ctx, "run_context", None))
        annotations = binding.saw_mcp_tool(tool)
        if not binding.guard.exposes(tool.name, server=binding.server, annotations=annotations):
            binding.unlisted[tool.name] = tool
            return False
        binding.unlisted.pop(tool.name, None)
        if existing is None:
            return True
        if isinstance(existing, Mapping):
            allowed = existing.get("allowed_tool_names")
            blocked = existing.get("blocked_tool_names")
            return (allowed is None or tool.name in allowed) and (blocked is None or tool.name not in blocked)
        answer = existing(ctx, tool)
        if hasattr(answer, "__await__"):
            answer = await answer
        return bool(answer)

    server.tool_filter = tool_filter


def _install_list_filter(server: Any, binding: _Binding) -> None:
    original = server.list_tools

    async def list_tools(run_context: Any = None, agent: Any = None) -> list[Any]:
        tools = await original(run_context, agent)
        await binding.note_rejections(run_context)
        kept = []
        for tool in tools:
            annotations = binding.saw_mcp_tool(tool)
            if binding.guard.exposes(tool.name, server=binding.server, annotations=annotations):
                kept.append(tool)
                binding.unlisted.pop(tool.name, None)
            else:
                binding.unlisted[tool.name] = tool
        return kept

    server.list_tools = list_tools


def _install_needs_approval(server: Any, binding: _Binding) -> None:
    # The SDK builds each MCP tool's FunctionTool.needs_approval from the server's approval policy, whose
    # callable form cannot see the call's arguments (approve_if needs them). Hook the per-tool factory on
    # this instance instead; an approval the server itself already requires is kept.
    original = server._get_needs_approval_for_tool

    def get_needs_approval(tool: Any, agent: Any) -> Any:
        existing = original(tool, agent)
        if binding.guard.approver is not None or existing is True:
            return existing
        annotations = binding.saw_mcp_tool(tool)
        if not binding.may_need_approval(tool.name, annotations):
            return existing
        return _compose_needs_approval(binding, tool.name, existing if callable(existing) else None)

    server._get_needs_approval_for_tool = get_needs_approval


def _install_call_tool(server: Any, binding: _Binding) -> None:
    original = server.call_tool
    guard = binding.guard
    require_extra("mcp.types", "openai-agents", "guard_mcp_server")

    async def raw_call(tool_name: str, arguments: Mapping[str, Any], meta: dict[str, Any] | None) -> Any:
        if meta is None:
            return await original(tool_name, dict(arguments))
        return await original(tool_name, dict(arguments), meta=meta)

    async def call_tool(tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None) -> Any:
        pending = binding.take_pending(tool_name)
        if pending is None:
            # Not admitted by our guardrail (a direct call): run the whole pipeline here.
            result = await guard.arun(
                tool_name,
                arguments or {},
                lambda **kw: raw_call(tool_name, kw, meta),
                server=binding.server,
                annotations=binding.annotations.get(tool_name),
                tool_schema=binding.schemas.get(tool_name),
            )
            if result.violation is None:
                return result.value
            if guard.on_violation == "raise":
                raise PolicyViolation(result.violation)
            return error_result(result.violation.to_json())
        admission = pending.admission
        try:
            value = await raw_call(tool_name, admission.call.args, meta)
        except BaseException as exc:
            await guard.afinish(admission, "error", error=exc)
            raise
        await guard.afinish(admission, "error" if result_is_error(value) else "ok")
        return value

    server.call_tool = call_tool


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
    args, _ = _parse_args(getattr(item, "arguments", None))
    why = reason or "a human declined this call"
    binding = _binding_for(item, public)
    tool = binding.raw_names.get(public, public) if binding is not None else public
    if binding is None:
        message = Decision.deny(tool, "approval_denied", reason=why).to_json()
    else:
        wrapper = getattr(state, "_context", None)
        call_id = getattr(item, "call_id", None)
        who = binding.who(wrapper, tool, call_id if isinstance(call_id, str) else None)
        call_args = args if args is not None else {}
        refused = binding.rejection(tool, call_args, who, why)
        binding.guard.finish(Admission(ToolCall(tool, call_args, **who), refused), "denied")
        message = refused.to_json()
    state.reject(item, always_reject=always, rejection_message=message)


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


def _is_violation(text: str) -> bool:
    if '"policy_violation"' not in text:
        return False
    try:
        payload = json.loads(text)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("error") == "policy_violation"


# -- calls to tools the model was not shown ---------------------------------------------------------------

_lookup_installed = False


def _install_unlisted_lookup() -> None:
    """Let the SDK find the tools a guard keeps from the model, when the model calls one anyway.

    The SDK looks a call up among the tools it showed the model; an unknown name ends the run
    (``ModelBehaviorError``) unless the run's own ``RunConfig`` says otherwise, and then with the SDK's text
    and no audit event. Spec section 8 wants the policy's answer and the run to go on. The SDK offers no
    per-tool hook for this, so the function that resolves a model response's tool calls
    (``agents.run_internal.turn_resolution.process_model_response``) is wrapped once: for a call whose name
    the shown tools lack, the agent's guards (its guarded MCP servers and guarded function tools) are asked
    for a tool they keep from the model, and that tool, guardrail included, is added to this lookup only.
    Agents without a guard, and responses that call only shown tools, go through untouched. On an SDK
    without that function nothing is wrapped (a warning is logged): hidden tools stay hidden, and a call to
    one ends the run as the SDK decides.
    """
    global _lookup_installed
    if _lookup_installed:
        return
    _lookup_installed = True
    try:
        from agents.run_internal import turn_resolution

        original = turn_resolution.process_model_response
    except (ImportError, AttributeError):
        log.warning("this openai-agents version has no tool lookup to extend; a call to a hidden tool ends the run")
        return
    if getattr(original, "_mcp_guard_original", None) is not None:
        return

    @functools.wraps(original)
    def process_model_response(*args: Any, **kwargs: Any) -> Any:
        try:
            extra = _unlisted_tools(kwargs.get("agent"), kwargs.get("all_tools"), kwargs.get("response"))
        except Exception:  # never break the SDK's own path; the call is then unknown, as without a guard
            log.exception("could not look up tools kept from the model")
            extra = []
        if extra:
            kwargs["all_tools"] = [*kwargs["all_tools"], *extra]
        return original(*args, **kwargs)

    process_model_response._mcp_guard_original = original  # type: ignore[attr-defined]
    turn_resolution.process_model_response = process_model_response


def _unlisted_tools(agent: Any, all_tools: Any, response: Any) -> list[Any]:
    calls = [o for o in getattr(response, "output", None) or () if getattr(o, "type", None) == "function_call"]
    if not calls or agent is None:
        return []
    shown = {getattr(t, "name", None) for t in all_tools or ()}
    missing = [c.name for c in calls if c.name not in shown and not getattr(c, "namespace", None)]
    if not missing:
        return []
    owners: list[tuple[_Binding, Any]] = []
    for server in getattr(agent, "mcp_servers", None) or ():
        state = getattr(server, "__dict__", {}).get("_mcp_guard")
        if state is not None:
            owners.append((state[0], server))
    seen: set[int] = set()
    for tool in getattr(agent, "tools", None) or ():
        for guardrail in getattr(tool, "tool_input_guardrails", None) or ():
            owner = getattr(getattr(guardrail, "guardrail_function", None), "__self__", None)
            if isinstance(owner, _Binding) and owner.wrapped and id(owner) not in seen:
                seen.add(id(owner))
                owners.append((owner, None))
    extra: list[Any] = []
    for name in dict.fromkeys(missing):
        for binding, server in owners:
            tool = binding.unlisted_tool(name, server, agent)
            if tool is not None:
                extra.append(tool)
                break
    return extra


def _binding_for(item: Any, tool: str) -> _Binding | None:
    agent = getattr(item, "agent", None)
    origin = getattr(item, "tool_origin", None)
    server_name = getattr(origin, "mcp_server_name", None)
    if server_name is not None:
        for server in getattr(agent, "mcp_servers", None) or ():
            state = getattr(server, "__dict__", {}).get("_mcp_guard")
            if state is not None and server.name == server_name:
                found: _Binding = state[0]
                return found
        return None
    for candidate in getattr(agent, "tools", None) or ():
        if getattr(candidate, "name", None) != tool:
            continue
        for guardrail in getattr(candidate, "tool_input_guardrails", None) or ():
            owner = getattr(getattr(guardrail, "guardrail_function", None), "__self__", None)
            if isinstance(owner, _Binding):
                return owner
    return None
