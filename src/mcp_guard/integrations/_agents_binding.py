"""A guard bound to Agents SDK tools: the tool input guardrail, the hand-off of an admitted call to the
execution wrapper, and the audit of calls a human rejected. Translation only: every decision, refusal and
audit event comes from the Guard's adapter contract (``aadmit``/``afinish``, ``arefuse``, ``malformed``,
``rejected``, ``violation``).
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from mcp_guard._calls.approval import ApprovalDecision
from mcp_guard._calls.call import Outcome
from mcp_guard._compat import tool_annotations, tool_input_schema
from mcp_guard._errors import PolicyViolation, require_extra
from mcp_guard._guard.guard import Admission, Guard, PolicySource, ToolCall, as_guard
from mcp_guard._policy.decision import Decision
from mcp_guard.integrations import _agents_sdk as sdk
from mcp_guard.integrations._adapt import Bounded, WhoLookup, is_violation, lookup, parse_args, without_required

_agents = require_extra("agents", "openai-agents", "mcp_guard.integrations.openai_agents")

if TYPE_CHECKING:
    from agents import ToolGuardrailFunctionOutput, ToolInputGuardrail, ToolInputGuardrailData

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
        LIVE.add(self)
        self.serial = next(_SERIALS)  # the newest binding that keeps a name back answers for it (see keeper)
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
        # an MCP call_tool gets the key through the call's _meta. Bounded: a call the SDK never starts is
        # finished when it is forgotten (quota back, its one audit event), never silently dropped.
        self.admitted: Bounded[int, tuple[Any, Admission, bool]] = Bounded(10_000, on_evict=self._never_started)
        # Calls our needs_approval held for a human, by call id: the check it made (None when the tool's own
        # setting asked), so the SDK's pre-approval guardrail pass need not check again ...
        self.asked: Bounded[str, Decision | None] = Bounded()
        # ... and their arguments, so a plain state.reject() can be audited with them.
        self.held: Bounded[str, Mapping[str, Any]] = Bounded()
        # The run inputs already handed to session memory, by (session, item): each once.
        self.seen_inputs: Bounded[tuple[str, str], None] = Bounded(50_000)
        # The grants made for the SDK's standing approvals (``always_approve``), by the SDK's record of that yes
        # (one per run: gone with the run), then by (identity, session): (policy hash, grant id). See _sdk_yes.
        self.standing: weakref.WeakKeyDictionary[Any, dict[tuple[Any, Any], tuple[str, str]]] = (
            weakref.WeakKeyDictionary()
        )

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
        """The Guard's keyword arguments for a call of ``tool``: who, where, the schema, the SDK's ids.

        The run id is the SDK's trace id; with tracing off, an id of this run in this process (its ``usage``
        object, which every tool context of one run shares), so session memory still has a key per run.
        """
        user_context = getattr(run_context, "context", None)
        run_id = sdk.run_id()
        if run_id is None and getattr(run_context, "usage", None) is not None:
            run_id = f"agents-run:{id(run_context.usage):x}"
        return {
            "server": self.server,
            "identity": lookup(self.identity, user_context, "user_id"),
            "session": lookup(self.session, user_context, "session_id"),
            "annotations": self.annotations.get(tool),
            "tool_schema": self.schemas.get(tool),
            "call_id": call_id if call_id is not None else getattr(run_context, "tool_call_id", None),
            "run_id": run_id,
            "context": user_context,  # Runner.run(..., context=...), for context.* conditions
        }

    async def observe_inputs(self, run_context: Any, who: Mapping[str, Any]) -> None:
        """The run's input (``turn_input``: the user's messages) goes to session memory, each item once."""
        key = who["session"] if who["session"] is not None else who["run_id"]
        if key is None or "texts" not in self.guard.policy.session_reads:
            return
        for text in sdk.user_texts(run_context):
            seen = (key, text)
            if seen in self.seen_inputs:
                continue
            self.seen_inputs[seen] = None
            await self.guard.aobserve_input(text, session=key)

    def may_need_approval(self, tool: str, annotations: Mapping[str, Any] | None) -> bool:
        """Whether a call of ``tool`` can be held for a human (decides ``needs_approval`` wiring).

        Wiring matters beyond cost: the SDK holds *every* call of a tool with a ``needs_approval`` callable whose
        arguments are not a JSON object for a human, instead of letting the guardrail answer ``invalid_arguments``.
        """
        return self.guard.policy.may_require_approval(tool, server=self.server, annotations=annotations)

    def _never_started(self, key: int, entry: tuple[Any, Admission, bool]) -> None:
        # An admission whose tool the SDK never ran (the run abandoned between the guardrail and the tool).
        try:
            self.guard.finish(entry[1], "denied")
        except Exception:  # an audit sink or store failure is logged by the Guard; never fail the new call
            log.exception("could not finish an abandoned admission of %s", entry[1].call.tool)

    def take(self, key: Any, tool: str) -> tuple[Any, Admission, bool] | None:
        """The admission our guardrail made for this call of ``tool``, handed over once."""
        entry = self.admitted.get(key)
        if entry is None or entry[1].call.tool != tool:
            return None
        del self.admitted[key]
        return entry

    async def run_admitted(
        self,
        admission: Admission,
        call: Callable[[], Awaitable[Any]],
        failed: Callable[[Any], bool],
        refused: Callable[[str], Any] = str,
    ) -> Any:
        """Run an admitted call and finish it: quota back where due, the call's one audit event; the result is
        judged by the policy's result rules and remembered (a withheld one becomes ``refused(violation JSON)``)."""
        try:
            value = await call()
        except BaseException as exc:
            await self.guard.afinish(admission, "error", error=exc)
            raise
        outcome: Outcome = "error" if failed(value) else "ok"
        if self.guard.policy.session_free:  # nothing to judge or remember: 0.2's path
            await self.guard.afinish(admission, outcome)
            return value
        finished = await self.guard.afinish(admission, outcome, result=value)
        if finished.violation is not None:
            return refused(self.guard.violation(finished.violation).to_json())
        return finished.value

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
                await self.guard.arefuse(call, refused, deliver=False)  # recorded after the fact: nobody to raise to
                messages[call_id] = refused.to_json()
        except Exception:  # never end a run over an audit of a rejection; the SDK's own message stands
            log.exception("could not audit a rejected tool call")

    def keeps_back(self, public: str) -> bool:
        """Whether this binding keeps the tool the model calls ``public`` from the model (hidden, denied outright)."""
        return self.raw_names.get(public, public) in self.unlisted

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
        elif not self.wrapped and self.guard.pinning:
            self._compare_function_tool(data, public, tool)
        guard, who = self.guard, self.who(ctx, tool)
        await self.observe_inputs(ctx, who)
        args, problem = parse_args(ctx.tool_arguments)
        if args is None:
            return await self._refuse(ToolCall(tool, {}, **who), guard.malformed(tool, problem, server=self.server))

        status = sdk.approval_status(ctx, public, call_id)
        asked = call_id in self.asked
        checked = self.asked.pop(call_id, None)
        if status is None and asked and guard.approver is None:
            # The SDK's pre-approval pass: the run is about to pause for a human. Reserve nothing; the check
            # our needs_approval made a moment ago stands (made here when the tool's own setting asked).
            if checked is None:
                checked = await guard.acheck(tool, args, **who)
            if checked.denied:
                return await self._refuse(ToolCall(tool, args, **who), checked)
            return _out().allow(output_info=_AWAITING)

        approval = self._sdk_yes(ctx, public, call_id, who) if status else None
        admission = await guard.aadmit(tool, args, approval=approval, **who)
        if isinstance(approval, ApprovalDecision) and approval.grants:
            self._minted(ctx, public, call_id, who, admission)
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

    def _sdk_yes(self, ctx: Any, public: str, call_id: str, who: Mapping[str, Any]) -> bool | ApprovalDecision:
        """What the SDK's yes for this call is to the guard: a yes for this call, or a standing one.

        ``state.approve(item, always_approve=True)`` is the SDK's standing yes: any arguments, that tool, the rest
        of that run (the SDK's key is the tool, not the call). The guard keeps it as a ``session`` grant for any
        arguments (the SDK's meaning, widened by the human's own "always"), bound to the tool, server, identity
        and rule, so later runs of the session, on every worker, are not held either, and every call it covers
        is audited with the grant's id. The first call made under it makes the grant; the SDK's later calls in
        that run name it. A call with no session gets no grant (the SDK's yes covers its own run only); after a
        reload, a call of that run still goes through on the SDK's yes (it does not pause again), but no new
        grant is made for a rule the human did not see.
        """
        record = sdk.standing_approval(ctx, public, call_id)
        if record is None:
            return True
        try:
            made = self.standing.setdefault(record, {})
        except TypeError:  # an SDK whose records cannot be weakly referenced: a yes for this call only
            return True
        grant = made.get((who["identity"], who["session"]))
        if grant is None:
            return ApprovalDecision.approve(scope="session", args="any")
        policy_hash, grant_id = grant
        if policy_hash != self.guard.policy.hash:
            return True
        return ApprovalDecision("approve", grant=grant_id)

    def _minted(self, ctx: Any, public: str, call_id: str, who: Mapping[str, Any], admission: Admission) -> None:
        """Remember the grant a standing SDK yes made, for the SDK's later calls in that run (see ``_sdk_yes``)."""
        grant_id = admission.approval.grant if admission.approval is not None else None
        record = sdk.standing_approval(ctx, public, call_id)
        if grant_id is not None and record is not None:
            self.standing.setdefault(record, {})[(who["identity"], who["session"])] = (
                self.guard.policy.hash,
                grant_id,
            )

    async def _learn_schema(self, data: Any, public: str, tool: str) -> None:
        """Find the input schema of a tool this guardrail meets for the first time (a bare policy_guardrail).

        A FunctionTool of the agent carries ``params_json_schema``; an MCP tool's ``inputSchema`` is read once
        from the agent's MCP server of this binding's name. Not found: the policy alone decides (None is kept).
        """
        agent = getattr(data, "agent", None)
        schema: Any = None
        candidate = self._compare_function_tool(data, public, tool)
        if candidate is not None:
            schema = _function_tool_schema(candidate)
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
                    found = tool_input_schema(mcp_tool)
                    self.schemas.setdefault(mcp_tool.name, found)
                    if self.guard.pinning:  # a listing this guardrail saw: compared with the pins
                        self.guard.listed(
                            mcp_tool.name,
                            server=self.server,
                            annotations=_annotations_of(mcp_tool),
                            description=getattr(mcp_tool, "description", None),
                            input_schema=found if isinstance(found, Mapping) else None,
                        )
                break
        self.schemas.setdefault(tool, schema)

    def _compare_function_tool(self, data: Any, public: str, tool: str) -> Any:
        """The agent's FunctionTool called ``public`` (None if it has none); when the guard pins, compared with the
        pins as a listing at each call, so a bare policy_guardrail refuses a tool that drifted (``tool_changed``)
        when the agent holds it as the server listed it (e.g. ``MCPUtil.to_function_tool`` of a fresh listing)."""
        for candidate in getattr(getattr(data, "agent", None), "tools", None) or ():
            if getattr(candidate, "name", None) == public and isinstance(candidate, _agents.FunctionTool):
                if self.guard.pinning:
                    schema = getattr(candidate, "params_json_schema", None)
                    self.guard.listed(
                        tool,
                        server=self.server,
                        annotations=_annotations_of(candidate),
                        description=getattr(candidate, "description", None),
                        input_schema=schema if isinstance(schema, Mapping) else None,
                    )
                return candidate
        return None

    async def _refuse(self, call: ToolCall, decision: Decision) -> ToolGuardrailFunctionOutput:
        await self.guard.arefuse(call, decision, deliver=False)  # on_violation is applied in the SDK's terms below
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
        await self.observe_inputs(ctx, who)
        args, problem = parse_args(input_json)
        if args is None:
            refused = await self.guard.arefuse(
                ToolCall(tool, {}, **who), self.guard.malformed(tool, problem, server=self.server)
            )
            return refused.to_json()
        result = await self.guard.arun(tool, args, lambda **kw: invoke(json.dumps(kw)), **who)
        return result.value if result.violation is None else self.guard.violation(result.violation).to_json()


#: Every binding alive in this process, to find the guard that keeps a tool back when nothing else ties the call
#: to it (the SDK's tool_error_formatter is not told the agent; an agent may hold none of a guard's tools).
LIVE: weakref.WeakSet[_Binding] = weakref.WeakSet()
_SERIALS = itertools.count()


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
