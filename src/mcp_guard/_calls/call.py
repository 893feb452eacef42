"""What the guard works on and hands back: a :class:`ToolCall`, its :class:`Admission`, a :class:`GuardResult`.

Plain data, no behaviour beyond a property or two: the pipeline (:mod:`mcp_guard._guard.pipeline`) makes and
settles them, the :class:`~mcp_guard.Guard` hands them to callers, adapters read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

from mcp_guard._calls.approval import ApprovalDecision
from mcp_guard._policy.decision import Decision

Outcome = Literal["ok", "error", "denied", "admitted", "cancelled"]
"""How a call ended, as its audit event says. ``"denied"``: the tool never ran (refused, or admitted and then
not called); ``"admitted"``: handed on, result not known here; ``"cancelled"``: cancelled or interrupted."""


class ToolCall(NamedTuple):
    """One call as the guard sees it: tool name, arguments, and who is calling. Immutable.

    A named tuple rather than a frozen dataclass: it is built on every call, and a frozen dataclass costs
    about 1 µs to build here, a fifth of the guard's whole budget on the allow path.
    """

    tool: str
    args: Mapping[str, Any]
    server: str | None = None
    identity: str | None = None
    session: str | None = None
    annotations: Mapping[str, Any] | None = None
    tool_schema: Any = None
    """The tool's declared input schema (JSON Schema dict or pydantic model class), checked strictly."""
    call_id: str | None = None
    """The framework's id for this tool call (LangChain ``tool_call_id``, Agents SDK ``call_id``)."""
    run_id: str | None = None
    """The framework's run or thread id, where it has one."""
    context: Any = None
    """The framework's context object (LangChain runtime context, Agents SDK run context), for ``context.*``."""
    claims: Mapping[str, Any] | None = None
    """A verified token's claims (the proxy's JWT front), for ``claims.*``."""

    def with_args(self, args: Mapping[str, Any]) -> ToolCall:
        return self._replace(args=args)


class CallKeywords(TypedDict, total=False):
    """The keywords every :class:`~mcp_guard.Guard` entry point takes to describe a call (all optional)."""

    server: str | None
    identity: str | None
    session: str | None
    annotations: Mapping[str, Any] | None
    tool_schema: Any
    call_id: str | None
    run_id: str | None
    context: Any
    claims: Mapping[str, Any] | None


class AdmitKeywords(CallKeywords, total=False):
    """:meth:`Guard.admit`'s keywords: a call's, and ``approval``, an answer obtained elsewhere."""

    approval: Any


class RunKeywords(AdmitKeywords, total=False):
    """:meth:`Guard.run`'s keywords: :meth:`Guard.admit`'s, and ``is_error``, which tells a failed result."""

    is_error: Callable[[Any], bool] | None


def new_call(
    tool: str,
    args: Mapping[str, Any] | None,
    server: str | None = None,
    identity: str | None = None,
    session: str | None = None,
    annotations: Mapping[str, Any] | None = None,
    tool_schema: Any = None,
    call_id: str | None = None,
    run_id: str | None = None,
    context: Any = None,
    claims: Mapping[str, Any] | None = None,
) -> ToolCall:
    """A :class:`ToolCall` from an entry point's arguments (an unknown keyword is a TypeError, as it was)."""
    # tuple.__new__ skips the named tuple's generated __new__ (argument parsing), 3x faster on this path.
    return tuple.__new__(
        ToolCall,
        (
            tool,
            {} if args is None else args,
            server,
            identity,
            session,
            annotations,
            tool_schema,
            call_id,
            run_id,
            context,
            claims,
        ),
    )


@dataclass(slots=True)
class Admission:
    """The result of steps 1-6 for one call: admitted (quota reserved under ``token``) or refused.

    ``call.args`` are the arguments to run with (an approver may have edited them). Pass the admission to
    :meth:`Guard.finish` / :meth:`Guard.afinish` once the tool has run (or was not run), so quota is given
    back where due and the audit event is written.
    """

    call: ToolCall
    decision: Decision
    token: str | None = None
    started: float = 0.0
    approval: ApprovalDecision | None = None
    fail_open: bool = False
    finished: bool = False
    recorded: bool = False
    """The call's one audit event has been written (closed audit writes it before the tool runs)."""
    sinks: tuple[Any, ...] | None = None
    """The audit sinks the event still goes to, when not every sink (a closed-mode refusal after a partial
    write). Typed loosely: :mod:`mcp_guard._audit.events` builds events from admissions, so this module
    imports none of it."""
    attempts: int = 1
    shadow: Decision | None = None
    """Decided in shadow mode: what enforcement would have done (audited as ``shadow``/``would_*``)."""
    result_note: dict[str, Any] | None = None
    """What the policy's result rules did to the tool's result (audited as ``result``; never a value)."""

    @classmethod
    def done(cls, call: ToolCall, decision: Decision, started: float = 0.0) -> Admission:
        """An admission settled as it is made: a refusal, or a call with nothing to give back (no token)."""
        return cls(call, decision, None, started, None, False, True)  # positional: keywords cost ~0.2 µs

    @property
    def admitted(self) -> bool:
        return self.decision.allowed


@dataclass(slots=True)
class GuardResult:
    """What :meth:`Guard.run` / :meth:`Guard.arun` return: the tool's value, or the violation."""

    value: Any = None
    violation: Decision | None = None
    admission: Admission | None = None

    @property
    def ok(self) -> bool:
        return self.violation is None


__all__ = [
    "Admission",
    "AdmitKeywords",
    "CallKeywords",
    "GuardResult",
    "Outcome",
    "RunKeywords",
    "ToolCall",
    "new_call",
]
