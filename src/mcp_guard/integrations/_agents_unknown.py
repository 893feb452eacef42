"""A model's call to a tool it was not shown (spec section 10): answered by a guard, never the end of a run.

A name is missing from what the model was shown for one of two reasons: a guard keeps the tool back (hidden,
or denied outright), or no tool has that name. Either way the model gets the policy JSON as the call's result
and the answering guard writes the call's one audit event:

- kept back: the keeping guard's decision for it (``hidden`` / ``denied`` / ``default_deny``, with its rule,
  for the server it was kept back for; ``tool_changed`` for a tool hidden because it drifted from its pin);
- unknown: the policy's refusal when the policy refuses that name outright, else code ``hidden`` with the
  reason "no tool named X is available to this agent" and no rule (no rule refused it: the tool does not
  exist, and ``hidden``'s hint, "do not call it again", is what the model should do).

The SDK reaches this two ways, public first:

- :class:`UnknownToolFormatter`, the ``RunConfig.tool_error_formatter`` of ``guard_run_config`` (with
  ``tool_not_found_behavior="return_error_to_model"``): the SDK asks it for the text of a call it found no tool
  for. It is told the name and the call id but not the arguments, so its audit event records none.
- :func:`refusing_tool`, which the private lookup fallback (:mod:`._agents_private`) supplies for runs without
  that ``RunConfig``: a ``FunctionTool`` whose guardrail refuses, so the event records the arguments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp_guard._errors import require_extra
from mcp_guard._guard.guard import Guard, ToolCall
from mcp_guard._guard.pins import drifted_refusal
from mcp_guard._policy.decision import Decision
from mcp_guard.integrations._adapt import parse_args
from mcp_guard.integrations._agents_binding import LIVE, _Binding, _maybe_await
from mcp_guard.integrations._agents_private import ANSWERS_UNKNOWN_TOOLS

_agents = require_extra("agents", "openai-agents", "mcp_guard.integrations.openai_agents")

if TYPE_CHECKING:
    from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrailData

log = logging.getLogger("mcp_guard")


def keeper(public: str, prefer: Guard | None = None) -> _Binding | None:
    """The live binding that keeps the tool called ``public`` from the model: one of ``prefer``'s if any, else the
    newest (several guards of one process may hide one name; nothing about the call tells them apart)."""
    found = [b for b in list(LIVE) if b.keeps_back(public)]
    return max(found, key=lambda b: (b.guard is prefer, b.serial), default=None)


async def refuse(
    binding: _Binding, public: str, run_context: Any, call_id: str | None, args: Mapping[str, Any]
) -> Decision:
    """Refuse a call of ``public`` that the model was not shown, through ``binding``'s guard; writes its one event.

    Returns the decision without applying ``on_violation`` (callers deliver it in their SDK's terms).
    """
    tool = binding.raw_names.get(public, public)
    kept = tool in binding.unlisted
    if not kept:  # not a tool of this binding: nothing about the call is known but its name
        tool = public
    who = binding.who(run_context, tool, call_id)
    if not kept:
        who.update(server=None, annotations=None, tool_schema=None)
    guard = binding.guard
    decision = _decision(guard, tool, who)
    return await guard.arefuse(ToolCall(tool, args, **who), decision, deliver=False)


def _decision(guard: Guard, tool: str, who: Mapping[str, Any]) -> Decision:
    server, annotations = who["server"], who["annotations"]
    # Kept back because its listing drifted from the pinned lock (pins: hide): tool_changed, as elsewhere.
    drifted: Decision | None = drifted_refusal(guard, tool, server)
    if drifted is not None:
        return drifted
    # A tool not exposed is refused by name alone (hidden or denied outright), so no arguments are needed.
    if not guard.exposes(tool, server=server, annotations=annotations):
        where = {"server": server, "identity": who["identity"], "session": who["session"], "annotations": annotations}
        decision = guard.policy.evaluate(tool, {}, **where)
        if decision.denied:
            return decision
    return Decision.deny(
        tool,
        "hidden",
        server=server,
        reason=f"no tool named {json.dumps(tool, ensure_ascii=False)} is available to this agent",
        policy=guard.policy.hash,
    )


class UnknownToolFormatter:
    """``RunConfig.tool_error_formatter``: a call of a tool the SDK found no tool for gets the policy JSON.

    Other kinds (``approval_rejected``, ``tool_exception``) go to ``delegate`` (the formatter the user's
    ``RunConfig`` had), or to the SDK's default text.
    """

    def __init__(self, binding: _Binding, delegate: Any) -> None:
        self.binding = binding
        self.delegate = delegate

    async def __call__(self, args: Any) -> str | None:
        if args.kind != "tool_not_found":
            return None if self.delegate is None else await _maybe_await(self.delegate(args))
        public = str(args.tool_name)
        binding = keeper(public, prefer=self.binding.guard) or self.binding
        try:
            decision = await refuse(binding, public, args.run_context, args.call_id, {})
        except Exception as exc:  # the SDK would use its own text: answer as the guard does for its own faults
            log.exception("could not answer a call of %s, a tool the model was not shown", public)
            decision = binding.guard.unavailable(public, exc)
        return decision.to_json()


# Read by _agents_private's lookup fallback: a run with this formatter needs no private patch.
setattr(UnknownToolFormatter, ANSWERS_UNKNOWN_TOOLS, True)


def refusing_tool(binding: _Binding, public: str) -> FunctionTool:
    """A ``FunctionTool`` named ``public`` that refuses every call through ``binding`` (never shown to the model).

    The refusal is its input guardrail's, so ``on_violation="raise"`` trips the guardrail as for any refused call.
    """

    async def guardrail(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        args, _ = parse_args(ctx.tool_arguments)
        return binding._verdict(await refuse(binding, public, ctx, ctx.tool_call_id, args or {}))

    async def invoke(ctx: Any, input_json: str) -> str:
        # Not reached (the guardrail refuses first); refuses the same way should an SDK skip guardrails.
        args, _ = parse_args(input_json)
        decision = await refuse(binding, public, ctx, getattr(ctx, "tool_call_id", None), args or {})
        return decision.to_json()

    tool: FunctionTool = _agents.FunctionTool(
        name=public,
        description="",
        params_json_schema={"type": "object", "properties": {}, "additionalProperties": True},
        on_invoke_tool=invoke,
        strict_json_schema=False,
        tool_input_guardrails=[_agents.ToolInputGuardrail(guardrail_function=guardrail, name="mcp_guard_not_shown")],
    )
    return tool
