"""The :class:`Guard`: steps 4-8 of the evaluation order around a tool call.

The evaluator decides (pure); the guard acts: it checks the budget, asks a human, reserves quota
atomically, calls the tool with retries, gives quota back when the call is not made or fails, and writes
one audit event. The steps live once, in generators that *yield* the I/O they need (:class:`_Check`,
:class:`_Reserve`, :class:`_Release`, :class:`_Ask`); a sync driver and an async driver perform that I/O
(tenacity's design). So ``invoke`` and ``ainvoke`` cannot drift apart.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, Union

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_result

from mcp_guard._approval import (
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    AsyncApprover,
    as_async_approver,
    coerce_decision,
)
from mcp_guard._argcheck import non_finite_path, tool_schema_error
from mcp_guard._audit import AuditSink, audit_sinks, emit, scrub, summarize_args
from mcp_guard._compat import result_is_error
from mcp_guard._decision import Decision, LimitCharge, round_up
from mcp_guard._errors import ApprovalError, PolicyViolation, StoreError
from mcp_guard._policy import Policy, load_policy
from mcp_guard._retry import RetryPolicy
from mcp_guard._stores import Store, StoreProtocol, Verdict, store_from_uri

log = logging.getLogger("mcp_guard")

T = TypeVar("T")
PolicySource = Union[Policy, "Guard", Mapping[str, Any], str, "os.PathLike[str]"]
Outcome = Literal["ok", "error", "denied", "admitted"]


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

    def with_args(self, args: Mapping[str, Any]) -> ToolCall:
        return self._replace(args=args)


def _new_call(
    tool: str,
    args: Mapping[str, Any] | None,
    server: str | None,
    identity: str | None,
    session: str | None,
    annotations: Mapping[str, Any] | None,
    tool_schema: Any = None,
    call_id: str | None = None,
    run_id: str | None = None,
) -> ToolCall:
    # tuple.__new__ skips the named tuple's generated __new__ (argument parsing), 3x faster on this path.
    return tuple.__new__(
        ToolCall,
        (tool, {} if args is None else args, server, identity, session, annotations, tool_schema, call_id, run_id),
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


# -- the I/O a pipeline step can ask for ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Check:
    charges: tuple[LimitCharge, ...]


@dataclass(frozen=True, slots=True)
class _Reserve:
    charges: tuple[LimitCharge, ...]


@dataclass(frozen=True, slots=True)
class _Release:
    charges: tuple[LimitCharge, ...]
    token: str


@dataclass(frozen=True, slots=True)
class _Ask:
    request: ApprovalRequest
    timeout_s: float


@dataclass(frozen=True, slots=True)
class _Answer:
    """What asking the approver came to: a decision, or the code of why there is none."""

    decision: ApprovalDecision | None = None
    code: Literal["approval_timeout", "approval_denied"] | None = None
    reason: str | None = None


_Op = _Check | _Reserve | _Release | _Ask
_Steps = Generator[_Op, Any, T]


@dataclass(slots=True)
class _AttemptState:
    # Carried across rate-limit waits so a human is asked at most once per call.
    approval: ApprovalDecision | None = None
    started: float = field(default_factory=time.perf_counter)


class Guard:
    """Enforces a policy around tool calls: rate limits, approvals, retries, audit.

    >>> guard = Guard(Policy.load("policy.json"), store="memory://", approver=my_approver, audit="audit.jsonl")
    >>> guard.invoke("git_log", {"max_count": 5}, git_log, server="git", identity="alice")

    ``store``: ``"memory://"`` (one process) or ``"redis://host:port/db"`` (shared by all workers), or a store.
    ``on_rate_limit``: ``"error"`` returns the violation with ``retry_after_s``; ``"wait"`` sleeps until the
    window frees (at most ``max_wait_s`` in all) and tries again.
    ``on_violation``: ``"return"`` gives back the violation payload; ``"raise"`` raises :class:`PolicyViolation`.
    ``fail_mode``: what a store failure means: ``"closed"`` denies (``guard_unavailable``), ``"open"`` allows
    and logs. ``approver``: a callable taking an :class:`ApprovalRequest` (sync or async), asked for at most
    ``approval_timeout_s`` (a rule's ``approval.timeout_s`` wins). ``audit``: a JSONL path, ``"logging"``, a
    sink, or a list of them. ``retry``: a :class:`RetryPolicy` for transient upstream failures (on by
    default); pass ``retry=False`` for tools that are not idempotent, where a connection error may come after
    the call took effect. ``clock``/``sleep``/``asleep`` are injectable for tests.
    ``check_tool_schema``: when a call carries the tool's declared input schema (``tool_schema=``, passed
    by every adapter that knows it), the raw arguments must fit it with no type coercion, else the call is
    refused as ``invalid_arguments`` before the policy runs (on by default; spec section 8).

    Every entry point also takes ``tool_schema``, ``call_id`` (the framework's tool-call id) and ``run_id``
    (its run or thread id), recorded in the audit event.

    An evaluator that raises, a store that fails (closed mode), an approver that raises, hangs or answers
    nonsense: each ends in a structured denial, never in an allowed call.
    """

    def __init__(
        self,
        policy: PolicySource,
        *,
        store: str | Store | StoreProtocol = "memory://",
        approver: Approver | None = None,
        audit: Any = None,
        on_rate_limit: Literal["error", "wait"] = "error",
        max_wait_s: float = 30.0,
        on_violation: Literal["return", "raise"] = "return",
        fail_mode: Literal["closed", "open"] = "closed",
        approval_timeout_s: float = 300.0,
        retry: RetryPolicy | bool | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        check_tool_schema: bool = True,
    ) -> None:
        if on_rate_limit not in ("error", "wait"):
            raise ValueError(f"on_rate_limit must be 'error' or 'wait', not {on_rate_limit!r}")
        if on_violation not in ("return", "raise"):
            raise ValueError(f"on_violation must be 'return' or 'raise', not {on_violation!r}")
        if fail_mode not in ("closed", "open"):
            raise ValueError(f"fail_mode must be 'closed' or 'open', not {fail_mode!r}")
        if not max_wait_s >= 0 or not approval_timeout_s > 0:  # written so that NaN is refused too
            raise ValueError("max_wait_s must be >= 0 and approval_timeout_s > 0")
        self.policy: Policy = policy.policy if isinstance(policy, Guard) else load_policy(policy)
        self._policy_hash: str | None = getattr(self.policy, "hash", None)
        self.store: Store | StoreProtocol = store_from_uri(store, clock=clock) if isinstance(store, str) else store
        self.approver: Approver | None = approver
        self._approver: AsyncApprover | None = as_async_approver(approver) if approver is not None else None
        self.audit_sinks: tuple[AuditSink, ...] = audit_sinks(audit)
        self.on_rate_limit = on_rate_limit
        self.max_wait_s = float(max_wait_s)
        self.on_violation = on_violation
        self.fail_mode = fail_mode
        self.approval_timeout_s = float(approval_timeout_s)
        if retry is None or retry is True:
            retry = RetryPolicy()
        self.retry: RetryPolicy | None = retry or None
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self.check_tool_schema = bool(check_tool_schema)

    def __repr__(self) -> str:
        return f"Guard(policy={self.policy.hash[:15]}…, store={type(self.store).__name__})"

    # -- public entry points ---------------------------------------------------------------------------

    def check(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> Decision:
        """Steps 1-4 without side effects: the decision, and whether budget remains (nothing reserved).

        For a pre-flight look (e.g. before pausing for a human); it does not admit the call: a later
        :meth:`admit` may still be refused if other callers take the budget meanwhile.
        """
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        return self._drive(self._check_steps(call))

    async def acheck(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> Decision:
        """:meth:`check` for async callers (the store is asked without blocking the event loop)."""
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        return await self._adrive(self._check_steps(call))

    def admit(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        approval: Any = None,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> Admission:
        """Steps 1-6: decide, ask for approval (unless ``approval`` is given), reserve. Nothing is called.

        Always follow with :meth:`finish`, or quota reserved for a call that is never made stays used
        until its window passes. ``approval`` is an answer obtained elsewhere (a LangGraph resume value,
        an Agents SDK approval): ``True``/``False``, an :class:`ApprovalDecision` or a resume dict.
        """
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        return self._admit(call, approval, None)

    async def aadmit(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        approval: Any = None,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> Admission:
        """:meth:`admit` for async callers; always follow with :meth:`afinish`."""
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        return await self._aadmit(call, approval, None)

    def finish(self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None) -> None:
        """Step 7's bookkeeping and step 8: give quota back where due, write the audit event. Idempotent.

        ``outcome``: ``"ok"``; ``"error"`` (the tool failed: quota back unless the limit counts failures);
        ``"denied"`` (refused, or admitted but never called: all quota back); ``"admitted"`` (the call was
        handed on and its result is not known here: nothing given back).
        """
        self._drive(self._finish_steps(admission, outcome, error))

    async def afinish(
        self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None
    ) -> None:
        """:meth:`finish` for async callers."""
        await self._adrive(self._finish_steps(admission, outcome, error))

    def run(
        self,
        tool: str,
        args: Mapping[str, Any] | None,
        fn: Callable[..., Any],
        *,
        approval: Any = None,
        is_error: Callable[[Any], bool] | None = None,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> GuardResult:
        """The whole pipeline around ``fn(**args)``, never raising a violation: see :class:`GuardResult`.

        The tool's own exceptions propagate (after quota is given back and the event is written).
        ``is_error`` tells whether a returned value is a failed call (default: an MCP result with
        ``isError`` or a LangChain ``ToolMessage`` with ``status="error"``).
        """
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        decision: Decision | None = None
        if approval is None and not self.audit_sinks:
            decision = self._evaluate(call)
            if decision.action == "allow" and not decision.limits:
                # The common case pays for nothing else: no quota to reserve or give back, no event to write.
                value = self._call_with_retry_sync(fn, call.args)
                return GuardResult(value=value, admission=Admission(call, decision, finished=True))
        admission = self._admit(call, approval, decision)
        if not admission.admitted:
            self.finish(admission, "denied")
            return GuardResult(violation=admission.decision, admission=admission)
        try:
            value = self._call_with_retry_sync(fn, admission.call.args)
        except BaseException as exc:
            self.finish(admission, "error", error=exc)
            raise
        self.finish(admission, "error" if _failed(value, is_error) else "ok")
        return GuardResult(value=value, admission=admission)

    async def arun(
        self,
        tool: str,
        args: Mapping[str, Any] | None,
        fn: Callable[..., Any],
        *,
        approval: Any = None,
        is_error: Callable[[Any], bool] | None = None,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        tool_schema: Any = None,
        call_id: str | None = None,
        run_id: str | None = None,
    ) -> GuardResult:
        """:meth:`run` for async tools: awaits ``fn(**args)`` (a sync ``fn``'s result is used as is)."""
        call = _new_call(tool, args, server, identity, session, annotations, tool_schema, call_id, run_id)
        decision: Decision | None = None
        if approval is None and not self.audit_sinks:
            decision = self._evaluate(call)
            if decision.action == "allow" and not decision.limits:
                value = await self._call_with_retry_async(fn, call.args)
                return GuardResult(value=value, admission=Admission(call, decision, finished=True))
        admission = await self._aadmit(call, approval, decision)
        if not admission.admitted:
            await self.afinish(admission, "denied")
            return GuardResult(violation=admission.decision, admission=admission)
        try:
            value = await self._call_with_retry_async(fn, admission.call.args)
        except BaseException as exc:
            await self.afinish(admission, "error", error=exc)
            raise
        await self.afinish(admission, "error" if _failed(value, is_error) else "ok")
        return GuardResult(value=value, admission=admission)

    def invoke(self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Run ``fn(**args)`` under the policy; return its result, or the violation payload (or raise).

        Takes the keyword arguments of :meth:`run`.
        """
        return self._deliver(self.run(tool, args, fn, **kwargs))

    async def ainvoke(self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """:meth:`invoke` for async tools: awaits ``fn(**args)`` (a sync ``fn``'s result is used as is)."""
        return self._deliver(await self.arun(tool, args, fn, **kwargs))

    def close(self) -> None:
        """Close the store's connections and the audit sinks that hold files. Safe to call twice.

        Inside a running event loop that used the async methods, prefer :meth:`aclose`.
        """
        if isinstance(self.store, Store):
            self.store.close()
        self._close_sinks()

    async def aclose(self) -> None:
        """:meth:`close` from the event loop the async methods ran in (closes async store clients cleanly)."""
        if isinstance(self.store, Store):
            await self.store.aclose()
        self._close_sinks()

    def _close_sinks(self) -> None:
        for sink in self.audit_sinks:
            closer = getattr(sink, "close", None)
            if callable(closer):
                closer()

    # -- the steps, once -------------------------------------------------------------------------------

    def _admit(self, call: ToolCall, approval: Any, decision: Decision | None) -> Admission:
        state = _AttemptState(approval=self._coerce_given(approval))
        admission = self._drive(self._admit_steps(call, state, decision))
        if self._should_wait(admission):
            admission = self._wait_sync(call, state, admission)
        return admission

    async def _aadmit(self, call: ToolCall, approval: Any, decision: Decision | None) -> Admission:
        state = _AttemptState(approval=self._coerce_given(approval))
        admission = await self._adrive(self._admit_steps(call, state, decision))
        if self._should_wait(admission):
            admission = await self._wait_async(call, state, admission)
        return admission

    def _evaluate(self, call: ToolCall) -> Decision:
        try:
            problem = self._argument_problem(call)
            if problem is not None:
                return Decision.deny(
                    call.tool, "invalid_arguments", server=call.server, reason=problem, policy=self._policy_hash
                )
            return self.policy.evaluate(
                call.tool,
                call.args,
                server=call.server,
                identity=call.identity,
                session=call.session,
                annotations=call.annotations,
            )
        except Exception:
            # Fail closed: a policy that cannot decide never lets a call through. The model is told the
            # guard could not check the call; the traceback (which may quote arguments) goes to the log only.
            log.exception("policy evaluation failed for %s; denying the call (fail closed)", call.tool)
            return Decision.deny(
                call.tool,
                "guard_unavailable",
                server=call.server,
                reason="the policy could not be evaluated for this call",
                policy=self._policy_hash,
            )

    def _argument_problem(self, call: ToolCall) -> str | None:
        """Spec section 8: arguments the tool would run with differently than the policy sees them."""
        bad = non_finite_path(call.args)
        if bad is not None:
            return f"{bad} is not a finite number (NaN and Infinity are not valid JSON)"
        if call.tool_schema is not None and self.check_tool_schema:
            return tool_schema_error(call.tool_schema, call.args)
        return None

    def _budget_steps(self, decision: Decision, op: _Check | _Reserve) -> _Steps[tuple[Decision, Verdict | None]]:
        """Check or reserve ``decision``'s limits; a refusal or a store failure becomes a denial."""
        try:
            verdict: Verdict = yield op
        except StoreError as exc:
            if self.fail_mode == "open":
                log.warning("rate-limit store failed, allowing %s (fail_mode='open'): %s", decision.tool, exc)
                return decision, None
            log.error("rate-limit store failed, denying %s (fail_mode='closed'): %s", decision.tool, exc)
            return (
                decision.violation(
                    "guard_unavailable", reason="the rate-limit store could not be reached", rule="/store"
                ),
                None,
            )
        if verdict.ok:
            return decision, verdict
        charge = verdict.charge
        reason = charge.describe(decision.tool) if charge is not None else f"{decision.tool} is rate limited"
        return (
            decision.violation(
                "rate_limited",
                reason=reason,
                rule=charge.rule if charge is not None else decision.rule,
                retry_after_s=verdict.retry_after_s,
            ),
            verdict,
        )

    def _check_steps(self, call: ToolCall) -> _Steps[Decision]:
        decision = self._evaluate(call)
        if decision.denied or not decision.limits:
            return decision
        decision, _ = yield from self._budget_steps(decision, _Check(decision.limits))
        return decision

    def _admit_steps(self, call: ToolCall, state: _AttemptState, decision: Decision | None = None) -> _Steps[Admission]:
        started = state.started
        if decision is None:
            decision = self._evaluate(call)  # steps 1-3
        if decision.denied:
            return Admission(call, decision, started=started)
        if decision.needs_approval or state.approval is not None:
            # Step 4 before step 5: no human is asked about a call that would be refused anyway.
            if decision.limits:
                checked, _ = yield from self._budget_steps(decision, _Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            if state.approval is None and decision.needs_approval:
                answer = yield from self._ask_steps(call, decision)
                if isinstance(answer, Decision):  # refused, timed out, or nobody to ask
                    return Admission(call, answer, started=started)
                state.approval = answer
            if state.approval is not None:
                if not state.approval.approved:
                    reason = state.approval.reason or "a human declined this call"
                    return Admission(call, decision.violation("approval_denied", reason=reason), started=started)
                if state.approval.kind == "edit" and state.approval.args is not None:
                    # Edited arguments are evaluated again from step 3; the human has already said yes.
                    call = call.with_args(state.approval.args)
                    decision = self._evaluate(call)
                    if decision.denied:
                        return Admission(call, decision, started=started, approval=state.approval)
                decision = decision.replace(action="allow")
        # Step 6: reserve every limit atomically (the fast path: no limits, no I/O).
        if not decision.limits:
            return Admission(call, decision, started=started, approval=state.approval)
        reserved, verdict = yield from self._budget_steps(decision, _Reserve(decision.limits))
        return Admission(
            call,
            reserved,
            token=verdict.token if verdict is not None else None,
            started=started,
            approval=state.approval,
            fail_open=verdict is None and reserved.allowed,
        )

    def _ask_steps(self, call: ToolCall, decision: Decision) -> _Steps[ApprovalDecision | Decision]:
        if self._approver is None:
            return decision.violation(
                "approval_required",
                reason=decision.reason or f"{call.tool} requires a human's approval and no approver is set",
            )
        timeout = decision.approval_timeout_s if decision.approval_timeout_s is not None else self.approval_timeout_s
        request = ApprovalRequest(
            tool=call.tool,
            args=dict(call.args),
            server=call.server,
            identity=call.identity,
            session=call.session,
            rule=decision.rule,
            reason=decision.reason,
            risk_class=decision.risk_class,
            description=decision.approval_description,
            timeout_s=timeout,
        )
        answer: _Answer = yield _Ask(request, timeout)
        if answer.decision is not None:
            return answer.decision
        assert answer.code is not None
        return decision.violation(answer.code, reason=answer.reason)

    def _finish_steps(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> _Steps[None]:
        if admission.finished:
            return None
        admission.finished = True
        decision = admission.decision
        if admission.token is not None and outcome in ("error", "denied"):
            # A call that was not made ("denied" after admission: cancelled, refused downstream) gives all
            # its quota back; a failed call gives back all but the limits that count failures.
            if outcome == "denied":
                give_back = decision.limits
            else:
                # A budget key holds one entry per call: a limit that counts failures keeps it for every
                # limit sharing that key (keeping too much is the safe side).
                kept = {c.key for c in decision.limits if c.count_failures}
                give_back = tuple(c for c in decision.limits if c.key not in kept)
            if give_back:
                try:
                    yield _Release(give_back, admission.token)
                except StoreError as exc:
                    log.error("could not give quota back for %s: %s", decision.tool, exc)
        if self.audit_sinks:
            try:
                event = self._event(admission, outcome, error)
            except Exception:  # auditing must never break the call it records
                log.exception("could not build the audit event for %s", decision.tool)
            else:
                emit(self.audit_sinks, event)
        return None

    def _event(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> dict[str, Any]:
        decision, call = admission.decision, admission.call
        args = call.args if isinstance(call.args, Mapping) else {}
        event: dict[str, Any] = {
            "time": self.clock(),
            "tool": call.tool,
            "server": call.server,
            "identity": call.identity,
            "session": call.session,
            "decision": decision.action,
            "code": decision.code,
            "rule": decision.rule,
            "reason": scrub(decision.reason, args, decision.redact),
            "policy": self._policy_hash,
            "args": summarize_args(args, decision.redact),
            "outcome": outcome,
            "latency_ms": round((time.perf_counter() - admission.started) * 1000.0, 3),
        }
        if admission.approval is not None:
            event["approval"] = admission.approval.kind
        if admission.fail_open:
            event["fail_open"] = True
        if decision.retry_after_s is not None:
            event["retry_after_s"] = decision.retry_after_s
        if error is not None:
            event["error"] = type(error).__name__
        return event

    # -- waiting out a rate limit (tenacity) -----------------------------------------------------------

    def _should_wait(self, admission: Admission) -> bool:
        d = admission.decision
        return (
            self.on_rate_limit == "wait"
            and d.code == "rate_limited"
            and d.retry_after_s is not None
            and d.retry_after_s <= self.max_wait_s
        )

    def _wait_kwargs(self) -> dict[str, Any]:
        def waitable(admission: Admission) -> bool:
            return admission.decision.code == "rate_limited" and admission.decision.retry_after_s is not None

        def wait(rs: RetryCallState) -> float:
            assert rs.outcome is not None  # tenacity computes a wait only after an attempt
            retry_after = rs.outcome.result().decision.retry_after_s
            return float(retry_after) if retry_after is not None else 0.0

        def stop(rs: RetryCallState) -> bool:
            # tenacity computes the wait before asking to stop: stop when sleeping it would take the total
            # time slept past max_wait_s (counted from the sleeps themselves, so an injected sleep works).
            return rs.idle_for + rs.upcoming_sleep > self.max_wait_s

        def give_last(rs: RetryCallState) -> Admission:
            assert rs.outcome is not None
            last: Admission = rs.outcome.result()
            return last

        return {
            "retry": retry_if_result(waitable),
            "wait": wait,
            "stop": stop,
            "retry_error_callback": give_last,
        }

    def _wait_sync(self, call: ToolCall, state: _AttemptState, first: Admission) -> Admission:
        replay = _First(value=first)

        def attempt() -> Admission:
            if replay.pending:
                return replay.replay()  # type: ignore[no-any-return]
            return self._drive(self._admit_steps(call, state))

        result: Admission = Retrying(sleep=self.sleep, **self._wait_kwargs())(attempt)
        return result

    async def _wait_async(self, call: ToolCall, state: _AttemptState, first: Admission) -> Admission:
        replay = _First(value=first)

        async def attempt() -> Admission:
            if replay.pending:
                return replay.replay()  # type: ignore[no-any-return]
            return await self._adrive(self._admit_steps(call, state))

        result: Admission = await AsyncRetrying(sleep=self.asleep, **self._wait_kwargs())(attempt)
        return result

    # -- calling the tool (tenacity for transient upstream failures) -----------------------------------

    def _call_with_retry_sync(self, fn: Callable[..., Any], args: Mapping[str, Any]) -> Any:
        if self.retry is None:
            return _sync_result(fn(**args))
        try:  # the first attempt runs outside tenacity: the common case pays nothing for retries
            value = _sync_result(fn(**args))
        except BaseException as exc:
            if not self.retry.is_transient(exc):
                raise
            first: _First = _First(error=exc)
        else:
            if self.retry.result_retry_after(value) is None:
                return value
            first = _First(value=value)

        def attempt() -> Any:
            return first.replay() if first.pending else _sync_result(fn(**args))

        return Retrying(sleep=self.sleep, **self.retry.tenacity_kwargs())(attempt)

    async def _call_with_retry_async(self, fn: Callable[..., Any], args: Mapping[str, Any]) -> Any:
        # ``fn`` is normally a coroutine function; a plain function is accepted too (its result is used
        # as is), so adapters need not wrap sync tools.
        if self.retry is None:
            value = fn(**args)
            return (await value) if inspect.isawaitable(value) else value
        try:
            value = fn(**args)
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            if not self.retry.is_transient(exc):
                raise
            first: _First = _First(error=exc)
        else:
            if self.retry.result_retry_after(value) is None:
                return value
            first = _First(value=value)

        async def attempt() -> Any:
            if first.pending:
                return first.replay()
            result = fn(**args)
            return (await result) if inspect.isawaitable(result) else result

        return await AsyncRetrying(sleep=self.asleep, **self.retry.tenacity_kwargs())(attempt)

    # -- drivers: perform the I/O the steps ask for ----------------------------------------------------

    def _drive(self, steps: _Steps[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            if isinstance(op, _Ask):
                value = self._ask_sync(op)  # turns every approver failure into an answer; never raises
                continue
            try:
                if isinstance(op, _Check):
                    value = self.store.check(op.charges)
                elif isinstance(op, _Reserve):
                    value = self.store.reserve(op.charges)
                else:
                    self.store.release(op.charges, op.token)
            except StoreError as exc:
                error = exc
            except Exception as exc:  # a third-party store that raised something else still fails closed
                error = StoreError(f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc

    async def _adrive(self, steps: _Steps[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            if isinstance(op, _Ask):
                value = await self._ask_async(op)
                continue
            try:
                if isinstance(op, _Check):
                    value = await self.store.acheck(op.charges)
                elif isinstance(op, _Reserve):
                    value = await self.store.areserve(op.charges)
                else:
                    await self.store.arelease(op.charges, op.token)
            except StoreError as exc:
                error = exc
            except Exception as exc:
                error = StoreError(f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc

    async def _ask_async(self, op: _Ask) -> _Answer:
        assert self._approver is not None
        try:
            task: asyncio.Future[Any] = asyncio.ensure_future(self._approver(op.request))
            try:
                # asyncio.wait, not wait_for: wait_for waits for the cancelled approver to finish, and one
                # that swallows the cancellation would hold the call forever.
                done, _ = await asyncio.wait((task,), timeout=op.timeout_s)
            except BaseException:  # the caller was cancelled: do not leave the approver running
                task.cancel()
                raise
            if not done:
                task.cancel()
                task.add_done_callback(_consume_outcome)
                return _Answer(code="approval_timeout", reason=f"no approval within {op.timeout_s:g} s")
            if task.cancelled():  # the approver cancelled itself: no answer
                return _Answer(code="approval_denied", reason="the approval could not be obtained")
            raw = task.result()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The model is told a human did not approve; the details go to the log, not to the model.
            log.exception("approver failed for %s", op.request.tool)
            return _Answer(code="approval_denied", reason="the approval could not be obtained")
        try:
            return _Answer(decision=coerce_decision(raw))
        except ApprovalError as exc:
            log.error("approver for %s returned an invalid answer: %s", op.request.tool, exc)
            return _Answer(code="approval_denied", reason="the approver gave no valid answer")

    def _ask_sync(self, op: _Ask) -> _Answer:
        # Run the (normalised, async) approver on a private loop in a daemon thread: the sync caller may
        # itself be inside a running event loop, and a hung approver must not keep the process alive.
        box: list[_Answer] = []
        thread = threading.Thread(
            target=lambda: box.append(asyncio.run(self._ask_async(op))),
            name="mcp-guard-approval",
            daemon=True,
        )
        thread.start()
        thread.join(op.timeout_s + 1.0)
        if not box:
            return _Answer(code="approval_timeout", reason=f"no approval within {op.timeout_s:g} s")
        return box[0]

    # -- helpers ---------------------------------------------------------------------------------------

    def _coerce_given(self, approval: Any) -> ApprovalDecision | None:
        if approval is None:
            return None
        try:
            return coerce_decision(approval)
        except ApprovalError as exc:
            log.error("invalid approval answer %r: %s", approval, exc)
            return ApprovalDecision.deny("the approval answer was not understood")

    def _deliver(self, result: GuardResult) -> Any:
        if result.violation is None:
            return result.value
        if self.on_violation == "raise":
            raise PolicyViolation(result.violation)
        return result.violation.to_payload()


@dataclass(slots=True)
class _First:
    """The outcome of a first attempt made outside tenacity, replayed as tenacity's attempt 1."""

    value: Any = None
    error: BaseException | None = None
    pending: bool = True

    def replay(self) -> Any:
        self.pending = False
        if self.error is not None:
            raise self.error
        return self.value


def _sync_result(value: Any) -> Any:
    # An async tool handed to invoke/run would "succeed" with an un-awaited coroutine as its result.
    if inspect.iscoroutine(value):
        value.close()
        raise TypeError("the tool returned a coroutine: call async tools with ainvoke/arun, not invoke/run")
    return value


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # A timed-out approver may still finish (or fail) later: read its outcome so asyncio does not log
    # "exception was never retrieved" for an answer nobody is waiting for.
    if not future.cancelled():
        future.exception()


def _failed(value: Any, is_error: Callable[[Any], bool] | None) -> bool:
    if is_error is not None:
        try:
            return bool(is_error(value))
        except Exception:  # the tool ran; a broken predicate must not turn its result into a crash
            log.exception("is_error raised; counting the call as successful")
            return False
    return result_is_error(value)


def as_guard(source: PolicySource, **options: Any) -> Guard:
    """A :class:`Guard` from a Guard (returned as is; ``options`` must then be empty), a Policy, a path or a dict."""
    if isinstance(source, Guard):
        if options:
            raise TypeError(f"options {sorted(options)} are for a new Guard; configure the Guard you passed instead")
        return source
    return Guard(source, **options)


__all__ = ["Admission", "Guard", "GuardResult", "ToolCall", "as_guard", "round_up"]
