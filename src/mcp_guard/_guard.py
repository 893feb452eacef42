"""The :class:`Guard`: steps 4-8 of the evaluation order around a tool call.

The evaluator decides (pure); the guard acts: it checks the budget, asks a human, reserves quota
atomically, calls the tool with retries, gives quota back when the call is not made or fails, and writes
one audit event. The steps live once, in generators that *yield* the I/O they need (:class:`_Check`,
:class:`_Reserve`, :class:`_Release`, :class:`_Ask`); a sync driver and an async driver perform that I/O
(tenacity's design). So ``invoke`` and ``ainvoke`` cannot drift apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, Union

from mcp_guard._approval import (
    WORKERS,
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    AsyncApprover,
    Workers,
    as_async_approver,
    background_loop,
    coerce_decision,
    is_async_callable,
)
from mcp_guard._argcheck import non_finite_path, tool_schema_error
from mcp_guard._audit import (
    AuditSink,
    audit_sinks,
    emit,
    iso_time,
    new_call_id,
    scrub,
    summarize_args,
    trace_ids,
)
from mcp_guard._audit import audit_key as audit_key_of
from mcp_guard._compat import result_is_error
from mcp_guard._decision import Decision, LimitCharge, round_up
from mcp_guard._errors import ApprovalError, ConfigurationError, PolicyViolation, StoreError
from mcp_guard._policy import Policy, load_policy
from mcp_guard._retry import RetryPolicy
from mcp_guard._retry import not_sent as _not_sent
from mcp_guard._shadow import Mode, Shadow, check_mode
from mcp_guard._shadow import add_event_fields as add_shadow_fields
from mcp_guard._shadow import admit_steps as shadow_admit_steps
from mcp_guard._shadow import check_steps as shadow_check_steps
from mcp_guard._stores import Store, StoreProtocol, Verdict, store_from_uri

log = logging.getLogger("mcp_guard")

T = TypeVar("T")
PolicySource = Union[Policy, "Guard", Mapping[str, Any], str, "os.PathLike[str]"]
Outcome = Literal["ok", "error", "denied", "admitted", "cancelled"]


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
    recorded: bool = False
    """The call's one audit event has been written (closed audit writes it before the tool runs)."""
    sinks: tuple[AuditSink, ...] | None = None
    """Where the event still goes, when not every sink (a closed-mode refusal after a partial write)."""
    attempts: int = 1
    shadow: Decision | None = None
    """Decided in shadow mode: what enforcement would have done (audited as ``shadow``/``would_*``)."""

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
class _Call:
    fn: Callable[..., Any]
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Ask:
    request: ApprovalRequest
    timeout_s: float
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Answer:
    """What asking the approver came to: a decision, or the code of why there is none."""

    decision: ApprovalDecision | None = None
    code: Literal["approval_timeout", "approval_denied"] | None = None
    reason: str | None = None


_Op = _Check | _Reserve | _Release | _Ask | _Call | _Sleep
_Steps = Generator[_Op, Any, T]


@dataclass(slots=True)
class _AttemptState:
    # Carried across rate-limit waits so a human is asked at most once per call.
    approval: ApprovalDecision | None = None
    started: float = field(default_factory=time.perf_counter)
    held: tuple[tuple[LimitCharge, ...], str] | None = None
    """Quota reserved and not yet handed to an admission (held while a human is asked)."""
    decision: Decision | None = None
    """The last decision taken, for the event of a call cancelled midway."""
    policy: Policy | None = None
    """The policy this call is decided by, taken once at its start: a reload mid-call does not change it."""
    recorded: bool = False
    """The call's one event has been written by the steps (an abort before the tool was handed the call)."""
    called: bool = False
    """The tool has been called (at least once): from here on an exception is the tool's, not the guard's."""


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
    sink, or a list of them. ``retry``: a :class:`RetryPolicy` for transient upstream failures, applied only
    to tools that declare themselves safe to repeat (annotations ``readOnlyHint``/``idempotentHint``, or
    ``retry: true`` on the rule; ``RetryPolicy(idempotent_only=False)`` for every tool); ``retry=False``
    never retries. Each attempt is charged to the call's limits. ``clock`` (default: wall time for audit
    stamps, a monotonic clock inside ``memory://``), ``sleep`` and ``asleep`` are injectable for tests.
    ``audit_failure``: ``"open"`` counts a failed audit write in :attr:`audit_failures`; ``"closed"`` writes
    the event before the tool runs and refuses the call (``guard_unavailable``) when it cannot.
    ``audit_key``: the HMAC key for argument fingerprints (default ``$MCP_GUARD_AUDIT_KEY``; none: none).
    ``store_timeout_s``: how long a third-party store may take before the call is refused.
    ``check_tool_schema``: when a call carries the tool's declared input schema (``tool_schema=``, passed
    by every adapter that knows it), the raw arguments must fit it with no type coercion, else the call is
    refused as ``invalid_arguments`` before the policy runs (on by default; spec section 8).

    Every entry point also takes ``tool_schema``, ``call_id`` (the framework's tool-call id) and ``run_id``
    (its run or thread id), recorded in the audit event.

    An evaluator that raises, a store that fails (closed mode), an approver that raises, hangs or answers
    nonsense: each ends in a structured denial, never in an allowed call.

    ``mode``: ``"shadow"`` audits what would be refused and refuses nothing; ``"enforce"`` enforces even rules
    the policy puts in shadow; ``None`` (default) lets the policy's ``mode`` fields decide. ``reload=True``
    watches the policy file and swaps in each valid new version (extra ``reload``); :meth:`reload` does it by
    hand; :meth:`close` stops the watcher. ``metrics``: ``True`` or an OpenTelemetry ``MeterProvider`` records
    ``mcp_guard.decisions`` and ``mcp_guard.guard.duration`` (extra ``otel``).
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
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        check_tool_schema: bool = True,
        audit_failure: Literal["open", "closed"] = "open",
        audit_key: str | bytes | None = None,
        store_timeout_s: float = 5.0,
        mode: Mode | None = None,
        reload: bool = False,
        metrics: Any = False,
    ) -> None:
        if on_rate_limit not in ("error", "wait"):
            raise ValueError(f"on_rate_limit must be 'error' or 'wait', not {on_rate_limit!r}")
        if on_violation not in ("return", "raise"):
            raise ValueError(f"on_violation must be 'return' or 'raise', not {on_violation!r}")
        if fail_mode not in ("closed", "open"):
            raise ValueError(f"fail_mode must be 'closed' or 'open', not {fail_mode!r}")
        if not max_wait_s >= 0 or not approval_timeout_s > 0:  # written so that NaN is refused too
            raise ValueError("max_wait_s must be >= 0 and approval_timeout_s > 0")
        if audit_failure not in ("open", "closed"):
            raise ConfigurationError(f"audit_failure must be 'open' or 'closed', not {audit_failure!r}")
        if not 0 < store_timeout_s < float("inf"):
            raise ConfigurationError(f"store_timeout_s must be a positive number of seconds, not {store_timeout_s!r}")
        self.policy: Policy = policy.policy if isinstance(policy, Guard) else load_policy(policy)
        self._policy_hash: str | None = getattr(self.policy, "hash", None)
        # The memory store keeps its own monotonic clock unless a clock is injected (tests move a FakeClock).
        store_options: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.store: Store | StoreProtocol = store_from_uri(store, **store_options) if isinstance(store, str) else store
        self.store_timeout_s = float(store_timeout_s)
        # Built-in stores bound their own I/O; a third-party one is bounded by store_timeout_s (a hung call
        # is abandoned and the call refused as guard_unavailable).
        self._store_bounded = not isinstance(self.store, Store)
        self.approver: Approver | None = approver
        self._approver: AsyncApprover | None = as_async_approver(approver) if approver is not None else None
        # A sync approver is called directly on a reused worker by sync callers (no event loop per approval).
        self._sync_approver: Approver | None = (
            approver if approver is not None and not is_async_callable(approver) else None
        )
        self.audit_sinks: tuple[AuditSink, ...] = audit_sinks(audit)
        self.audit_failure = audit_failure
        self.audit_failures = 0
        """Audit writes that failed (one per sink per event), counted in both modes."""
        self._audit_lock = threading.Lock()
        self._audit_key = audit_key_of(audit_key)
        self.on_rate_limit = on_rate_limit
        self.max_wait_s = float(max_wait_s)
        self.on_violation = on_violation
        self.fail_mode = fail_mode
        self.approval_timeout_s = float(approval_timeout_s)
        if retry is None or retry is True:
            retry = RetryPolicy()
        self.retry: RetryPolicy | None = retry or None
        self.clock: Callable[[], float] = clock if clock is not None else time.time
        self.sleep = sleep
        self.asleep = asleep
        self.check_tool_schema = bool(check_tool_schema)
        self._init_living(policy, check_mode(mode), reload, metrics)

    def with_approver(self, approver: Approver | None) -> Guard:
        """A view of this guard that asks ``approver`` instead: same policy, store, audit sinks and options.

        A shallow copy, cheap enough to make per call (the MCP proxy asks each client that can answer
        elicitation through its own view); state that changes later, such as a reloaded policy, is shared
        only if it lives in a shared object, so make views per call rather than keeping them.
        """
        view = copy.copy(self)
        view.approver = approver
        view._approver = as_async_approver(approver) if approver is not None else None
        view._sync_approver = approver if approver is not None and not is_async_callable(approver) else None
        return view

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

        ``outcome``: ``"ok"``; ``"error"`` with no ``error`` (the tool returned an error result: quota back
        unless the limit counts failures); ``"error"`` with the ``error`` it raised (quota kept: the tool may
        have acted, unless the error shows the call was never sent, e.g. a refused connection);
        ``"denied"`` (refused, or admitted but never called: all quota back); ``"admitted"`` (handed on,
        result not known here) and ``"cancelled"`` (cancelled after it was handed on): nothing given back.
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
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        if approval is None and not self.audit_sinks:
            decision = self._evaluate(call, policy)
            if decision.action == "allow" and not decision.limits and self._retry_for(call, decision) is None:
                # The common case pays for nothing else: no quota to reserve or give back, no event to write.
                value = _sync_result(fn(**call.args))
                return GuardResult(value=value, admission=Admission(call, decision, finished=True))
        state = _AttemptState(approval=self._coerce_given(approval), policy=policy)
        try:
            return self._drive(self._run_steps(call, state, decision, fn, is_error))
        except Exception as exc:
            if state.called:  # the tool's own failure: exactly what the unguarded tool would have raised
                raise
            return self._guard_fault(call, state, exc)

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
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        if approval is None and not self.audit_sinks:
            decision = self._evaluate(call, policy)
            if decision.action == "allow" and not decision.limits and self._retry_for(call, decision) is None:
                value = fn(**call.args)
                if inspect.isawaitable(value):
                    value = await value
                return GuardResult(value=value, admission=Admission(call, decision, finished=True))
        state = _AttemptState(approval=self._coerce_given(approval), policy=policy)
        try:
            return await self._adrive(self._run_steps(call, state, decision, fn, is_error))
        except Exception as exc:
            if state.called:
                raise
            return self._guard_fault(call, state, exc)

    def invoke(self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Run ``fn(**args)`` under the policy; return its result, or the violation payload (or raise).

        Takes the keyword arguments of :meth:`run`.
        """
        return self._deliver(self.run(tool, args, fn, **kwargs))

    async def ainvoke(self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """:meth:`invoke` for async tools: awaits ``fn(**args)`` (a sync ``fn``'s result is used as is)."""
        return self._deliver(await self.arun(tool, args, fn, **kwargs))

    # -- the adapter contract: what every framework adapter needs, so that adapters only translate -----

    def refuse(self, call: ToolCall, decision: Decision) -> Decision:
        """Audit a refusal decided outside the pipeline as the call's one event, then apply ``on_violation``.

        For calls the policy never sees as such: argument text that is not a JSON object (:meth:`malformed`),
        a human's rejection through the framework (:meth:`rejected`). Returns the decision to show the
        model, or raises :class:`PolicyViolation` when ``on_violation="raise"``.
        """
        self.finish(Admission(call, decision), "denied")
        return self.violation(decision)

    async def arefuse(self, call: ToolCall, decision: Decision) -> Decision:
        """:meth:`refuse` for async callers."""
        await self.afinish(Admission(call, decision), "denied")
        return self.violation(decision)

    def violation(self, decision: Decision) -> Decision:
        """The one place ``on_violation`` is applied: ``"raise"`` raises :class:`PolicyViolation`, otherwise the
        decision comes back for the adapter to hand to the model in its framework's shape."""
        if self.on_violation == "raise":
            raise PolicyViolation(decision)
        return decision

    def malformed(self, tool: str, problem: str | None, *, server: str | None = None) -> Decision:
        """The ``invalid_arguments`` refusal for argument text that is not a JSON object."""
        return Decision.deny(tool, "invalid_arguments", server=server, reason=problem, policy=self.policy.hash)

    def rejected(self, call: ToolCall, reason: str) -> Decision:
        """The ``approval_denied`` refusal for a call a human rejected, naming the rule that asked for approval."""
        decision = self._evaluate(call._replace(tool_schema=None))
        return decision.violation("approval_denied", reason=reason)

    def unavailable(self, tool: str, exc: BaseException, *, server: str | None = None) -> Decision:
        """The ``guard_unavailable`` refusal for a fault of the guard itself (fail closed, never end a run).

        The log gets the exception's type and traceback; the model gets only its type (its text may quote
        arguments, redacted ones included).
        """
        log.error("mcp-guard failed while checking %s (%s)", tool, type(exc).__name__, exc_info=exc)
        return Decision.deny(
            tool,
            "guard_unavailable",
            server=server,
            reason=f"the policy guard failed: {type(exc).__name__}",
            rule="/guard",
            policy=getattr(self.policy, "hash", None),
        )

    @staticmethod
    def is_error_result(value: Any) -> bool:
        """A tool's returned value is a failed call: an MCP result with ``isError`` (mcp 1 and 2 spellings), or
        a LangChain ``ToolMessage`` with ``status="error"``."""
        return result_is_error(value)

    def _guard_fault(self, call: ToolCall, state: _AttemptState, exc: Exception) -> GuardResult:
        # run/arun never raise for the guard's own faults: the call is refused (closed), with one event.
        admission = Admission(call, self.unavailable(call.tool, exc, server=call.server), finished=True)
        if not state.recorded:
            self._record(admission, "denied", None)
        return GuardResult(violation=admission.decision, admission=admission)

    def close(self) -> None:
        """Close the store's connections and the audit sinks that hold files. Safe to call twice.

        Inside a running event loop that used the async methods, prefer :meth:`aclose`.
        """
        self._stop_watching()
        if isinstance(self.store, Store):
            self.store.close()
        self._close_sinks()

    async def aclose(self) -> None:
        """:meth:`close` from the event loop the async methods ran in (closes async store clients cleanly)."""
        self._stop_watching()
        if isinstance(self.store, Store):
            await self.store.aclose()
        self._close_sinks()

    def _close_sinks(self) -> None:
        for sink in self.audit_sinks:
            closer = getattr(sink, "close", None)
            if callable(closer):
                closer()

    # -- living with a policy: shadow mode, reload, usage (spec section 9) ------------------------------

    def _init_living(self, source: Any, mode: Mode | None, reload: bool, metrics: Any) -> None:
        # Each costs nothing per call unless asked for: no shadow rule and no mode= -> no hook runs.
        self.mode: Mode | None = mode
        self._shadow: Shadow | None = None
        self._reload_lock = threading.Lock()
        self._reload_listeners: list[Callable[[Policy], None]] = []
        self._policy_path: str | os.PathLike[str] | None = source if isinstance(source, (str, os.PathLike)) else None
        self._watcher: Any = None
        self._set_policy(self.policy)
        if metrics:
            from mcp_guard._metrics import metrics_sink

            self.audit_sinks = (*self.audit_sinks, metrics_sink(metrics))
        if reload:
            if self._policy_path is None:
                raise ValueError("reload=True needs a policy file path to watch")
            from mcp_guard._reload import PolicyWatcher

            self._watcher = PolicyWatcher(self, self._policy_path).start()

    def _set_policy(self, policy: Policy) -> None:
        # Modes first, so a call decided by the new policy finds them; the shadow table is kept once made,
        # since calls decided by the previous policy may still be finishing.
        if self._shadow is not None or Shadow.needed(policy, self.mode):
            shadow = self._shadow or Shadow(self.mode)
            shadow.use(policy)
            self._shadow = shadow
        self.policy = policy
        self._policy_hash = policy.hash

    def exposes(self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None) -> bool:
        """Whether adapters should show ``tool`` to the model: :meth:`Policy.exposes`, except that a tool hidden or
        denied outright by a rule in shadow mode stays visible (in shadow nothing is refused, so nothing is hidden).
        """
        policy = self.policy
        if policy.exposes(tool, server=server, annotations=annotations):
            return True
        if self._shadow is None:
            return False
        return self._shadow.mode_of(policy.evaluate(tool, {}, server=server, annotations=annotations)) == "shadow"

    def reload(self, source: Any = None) -> bool:
        """Load the policy file again (or ``source``: a path, dict or Policy) and put it in force if valid.

        True when a new policy is now in force. An invalid one leaves the old in force, is logged and audited
        (``{"event": "policy_reload", "ok": false, ...}``), and returns False; so does an unchanged file.
        Counters are kept: they live in the store by counter name and scope.
        """
        from mcp_guard._reload import reload_policy

        return reload_policy(self, source)

    def on_reload(self, listener: Callable[[Policy], None]) -> None:
        """Call ``listener(new_policy)`` after each reload that put a new policy in force.

        It runs in the thread that reloaded (the file watcher's, or the caller of :meth:`reload`); one that
        raises is logged and the others still run. The MCP proxy uses it to tell clients to list tools again.
        """
        self._reload_listeners.append(listener)

    def _stop_watching(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            self._watcher = None
            watcher.stop()

    def usage(
        self,
        *,
        identity: str | None = None,
        session: str | None = None,
        tool: str | None = None,
        server: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Per limit: units used, max, remaining, and when the next unit frees up (:class:`LimitUsage`).

        With ``tool``, the limits a call of that tool would be charged; without, every limit in the policy
        (per-tool limits only for rules that name one tool). Reads the store, changes nothing.
        """
        from mcp_guard._usage import report_usage, usage_charges

        return report_usage(
            self.store,
            usage_charges(
                self.policy, tool=tool, server=server, identity=identity, session=session, annotations=annotations
            ),
            self.clock,
        )

    async def ausage(
        self,
        *,
        identity: str | None = None,
        session: str | None = None,
        tool: str | None = None,
        server: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """:meth:`usage` for async callers."""
        from mcp_guard._usage import areport_usage, usage_charges

        return await areport_usage(
            self.store,
            usage_charges(
                self.policy, tool=tool, server=server, identity=identity, session=session, annotations=annotations
            ),
            self.clock,
        )

    # -- the steps, once -------------------------------------------------------------------------------

    def _admit(self, call: ToolCall, approval: Any, decision: Decision | None) -> Admission:
        state = _AttemptState(approval=self._coerce_given(approval), policy=self.policy)
        return self._drive(self._admission_steps(call, state, decision))

    async def _aadmit(self, call: ToolCall, approval: Any, decision: Decision | None) -> Admission:
        state = _AttemptState(approval=self._coerce_given(approval), policy=self.policy)
        return await self._adrive(self._admission_steps(call, state, decision))

    def _evaluate(self, call: ToolCall, policy: Policy | None = None) -> Decision:
        policy = self.policy if policy is None else policy  # the call's own policy, across a reload
        try:
            problem = self._argument_problem(call)
            if problem is not None:
                return Decision.deny(
                    call.tool, "invalid_arguments", server=call.server, reason=problem, policy=policy.hash
                )
            decision = policy.evaluate(
                call.tool,
                call.args,
                server=call.server,
                identity=call.identity,
                session=call.session,
                annotations=call.annotations,
            )
            if decision.redact and decision.reason is not None:
                # A reason may quote the argument that failed a check: never a redacted one (spec section 8).
                decision = decision.replace(reason=scrub(decision.reason, call.args, decision.redact))
            return decision
        except Exception as exc:
            # Fail closed: a policy that cannot decide never lets a call through. The model is told the
            # guard could not check the call; the log gets the exception's type only (its text or
            # traceback may quote arguments, redacted ones included).
            log.error("policy evaluation failed for %s (%s); denying the call", call.tool, type(exc).__name__)
            return Decision.deny(
                call.tool,
                "guard_unavailable",
                server=call.server,
                reason="the policy could not be evaluated for this call",
                policy=getattr(policy, "hash", None),
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

    def _check_steps(self, call: ToolCall, _core: bool = False) -> _Steps[Decision]:
        if self._shadow is not None and not _core:
            return (yield from shadow_check_steps(self, self._shadow, call))
        decision = self._evaluate(call)
        if decision.denied or not decision.limits:
            return decision
        decision, _ = yield from self._budget_steps(decision, _Check(decision.limits))
        return decision

    def _admission_steps(self, call: ToolCall, state: _AttemptState, decision: Decision | None) -> _Steps[Admission]:
        """Steps 1-6 with rate-limit waits; a cancellation writes its event; closed audit writes ahead."""
        try:
            admission = yield from self._admit_steps(call, state, decision)
            slept = 0.0
            while self._should_wait(admission):
                wait = float(admission.decision.retry_after_s or 0.0)
                if slept + wait > self.max_wait_s:
                    break
                yield _Sleep(wait)
                slept += wait
                admission = yield from self._admit_steps(admission.call, state)
        except GeneratorExit:
            raise
        except BaseException as exc:  # cancelled or interrupted before the tool was handed the call
            yield from self._abort_steps(call, state, exc)
            raise
        if admission.decision.redact and admission.decision.reason is not None and admission.decision.denied:
            # An approver's or a store's words may quote arguments too.
            admission.decision = admission.decision.replace(
                reason=scrub(admission.decision.reason, admission.call.args, admission.decision.redact)
            )
        if admission.admitted and self.audit_failure == "closed" and self.audit_sinks:
            admission = yield from self._write_ahead_steps(admission)
        return admission

    def _abort_steps(self, call: ToolCall, state: _AttemptState, exc: BaseException) -> _Steps[None]:
        # Quota held for this call (an approval pending, a reservation just made) goes back: the tool was
        # never handed the call. Then the call's one event, outcome "cancelled".
        if state.held is not None:
            charges, token = state.held
            state.held = None
            yield from self._release_steps(charges, token, call.tool)
        decision = state.decision or Decision.deny(call.tool, "guard_unavailable", server=call.server)
        admission = Admission(call, decision, started=state.started, approval=state.approval)
        state.recorded = True
        self._record(admission, "cancelled", exc)

    def _write_ahead_steps(self, admission: Admission) -> _Steps[Admission]:
        """``audit_failure="closed"``: the call's one event is written before the tool runs, or it does not run."""
        failed = self._record(admission, "admitted", None)
        if not failed:
            return admission
        if admission.token is not None:
            yield from self._release_steps(admission.decision.limits, admission.token, admission.call.tool)
        refused = Admission(
            admission.call,
            admission.decision.violation(
                "guard_unavailable", reason="the audit record of this call could not be written", rule="/audit"
            ),
            started=admission.started,
            approval=admission.approval,
        )
        # The sinks that took the "admitted" record keep it; only the others are given the refusal.
        refused.sinks = tuple(failed)
        return refused

    def _admit_steps(
        self, call: ToolCall, state: _AttemptState, decision: Decision | None = None, _core: bool = False
    ) -> _Steps[Admission]:
        if self._shadow is not None and not _core:
            return (yield from shadow_admit_steps(self, self._shadow, call, state, decision))
        started = state.started
        if decision is None:
            decision = self._evaluate(call, state.policy)  # steps 1-3
        state.decision = decision
        if decision.denied:
            return Admission(call, decision, started=started)
        if decision.needs_approval and state.approval is None:
            return (yield from self._ask_and_hold_steps(call, state, decision))
        if state.approval is not None:
            # An answer obtained elsewhere (a resume value) or earlier in this call (before a rate-limit wait).
            if decision.limits:
                checked, _ = yield from self._budget_steps(decision, _Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            if not state.approval.approved:
                reason = state.approval.reason or "a human declined this call"
                return Admission(call, decision.violation("approval_denied", reason=reason), started=started)
            if state.approval.kind == "edit" and state.approval.args is not None:
                # Edited arguments are evaluated again from step 3; the human has already said yes.
                call = call.with_args(state.approval.args)
                decision = state.decision = self._evaluate(call, state.policy)
                if decision.denied:
                    return Admission(call, decision, started=started, approval=state.approval)
            decision = decision.replace(action="allow")
        return (yield from self._reserve_steps(call, state, decision))

    def _reserve_steps(self, call: ToolCall, state: _AttemptState, decision: Decision) -> _Steps[Admission]:
        # Step 6: reserve every limit atomically (the fast path: no limits, no I/O).
        if not decision.limits:
            return Admission(call, decision, started=state.started, approval=state.approval)
        reserved, verdict = yield from self._budget_steps(decision, _Reserve(decision.limits))
        token = verdict.token if verdict is not None and reserved.allowed else None
        return Admission(
            call,
            reserved,
            token=token,
            started=state.started,
            approval=state.approval,
            fail_open=verdict is None and reserved.allowed,
        )

    def _ask_and_hold_steps(self, call: ToolCall, state: _AttemptState, decision: Decision) -> _Steps[Admission]:
        """Step 5 with the quota held: reserved before the human is asked, so concurrent calls see it.

        No human is asked about a call the budget would refuse, and a call a human approved is not then
        refused for want of budget. Rejection, timeout or a failed approver gives the quota back.
        """
        started = state.started
        if self._approver is None:
            if decision.limits:  # a rate limit is the more useful answer when the budget is gone anyway
                checked, _ = yield from self._budget_steps(decision, _Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            reason = decision.reason or f"{call.tool} requires a human's approval and no approver is set"
            return Admission(call, decision.violation("approval_required", reason=reason), started=started)
        fail_open = False
        if decision.limits:
            held, verdict = yield from self._budget_steps(decision, _Reserve(decision.limits))
            if held.denied:
                return Admission(call, held, started=started)
            if verdict is not None and verdict.token is not None:
                state.held = (decision.limits, verdict.token)
            fail_open = verdict is None
        answer = yield from self._ask_steps(call, decision)
        refusal: Decision | None = None
        if isinstance(answer, Decision):  # timed out or the approver failed
            refusal = answer
        else:
            state.approval = answer
            if not answer.approved:
                refusal = decision.violation("approval_denied", reason=answer.reason or "a human declined this call")
        if refusal is not None:
            yield from self._release_held_steps(state, call.tool)
            return Admission(call, refusal, started=started, approval=state.approval)
        assert state.approval is not None
        if state.approval.kind == "edit" and state.approval.args is not None:
            call = call.with_args(state.approval.args)
            edited = state.decision = self._evaluate(call, state.policy)
            if edited.denied:
                yield from self._release_held_steps(state, call.tool)
                return Admission(call, edited, started=started, approval=state.approval)
            if edited.limits != decision.limits:  # the edit changed what the call costs: reserve that instead
                yield from self._release_held_steps(state, call.tool)
                return (yield from self._reserve_steps(call, state, edited.replace(action="allow")))
            decision = edited
        token = state.held[1] if state.held is not None else None
        state.held = None  # handed to the admission
        return Admission(
            call,
            decision.replace(action="allow"),
            token=token,
            started=started,
            approval=state.approval,
            fail_open=fail_open,
        )

    def _release_held_steps(self, state: _AttemptState, tool: str) -> _Steps[None]:
        if state.held is not None:
            charges, token = state.held
            state.held = None
            yield from self._release_steps(charges, token, tool)

    def _release_steps(self, charges: tuple[LimitCharge, ...], token: str, tool: str) -> _Steps[None]:
        if not charges:
            return
        try:
            yield _Release(charges, token)
        except StoreError as exc:
            log.error("could not give quota back for %s: %s", tool, exc)

    def _ask_steps(self, call: ToolCall, decision: Decision) -> _Steps[ApprovalDecision | Decision]:
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
            redact=decision.redact,
        )
        answer: _Answer = yield _Ask(request, timeout, decision.redact)
        if answer.decision is not None:
            return answer.decision
        assert answer.code is not None
        return decision.violation(answer.code, reason=answer.reason)

    def _retry_for(self, call: ToolCall, decision: Decision) -> RetryPolicy | None:
        """The retry policy for this call, or None: retries only where repeating the call is known to be safe."""
        retry = self.retry
        if retry is None or decision.retry is False:
            return None
        if decision.retry is True or not retry.idempotent_only:
            return retry
        annotations = call.annotations
        if annotations and (annotations.get("readOnlyHint") is True or annotations.get("idempotentHint") is True):
            return retry
        return None

    def _run_steps(
        self,
        call: ToolCall,
        state: _AttemptState,
        decision: Decision | None,
        fn: Callable[..., Any],
        is_error: Callable[[Any], bool] | None,
    ) -> _Steps[GuardResult]:
        """The whole call: admit, then call the tool with retries, each attempt charged, then one event.

        Quota comes back only when the tool is known not to have run: refused before the call, the
        transport failed before sending, or the tool returned an error result (unless the limit counts
        failures). A timeout, a connection lost mid-call, an exception from inside the tool or a
        cancellation keeps its charge: the tool may have acted.
        """
        admission = yield from self._admission_steps(call, state, decision)
        if not admission.admitted:
            yield from self._finish_steps(admission, "denied", None)
            return GuardResult(violation=admission.decision, admission=admission)
        retry = self._retry_for(admission.call, admission.decision)
        charges = admission.decision.limits
        token = admission.token
        admission.token = None  # this loop settles every attempt's quota itself
        args = admission.call.args
        attempt, slept = 1, 0.0
        while True:
            state.called = True
            try:
                value = yield _Call(fn, args)
            except GeneratorExit:
                raise
            except Exception as exc:
                if token is not None and _never_ran(exc):
                    yield from self._release_steps(charges, token, call.tool)
                elif token is not None and _is_error_result(exc):
                    yield from self._release_steps(_uncounted(charges), token, call.tool)
                wait = retry.next_wait(attempt, slept, exc) if retry is not None else None
                if wait is None:
                    admission.attempts = attempt
                    yield from self._finish_steps(admission, "error", exc)
                    raise
                last_error: BaseException | None = exc
            except BaseException as exc:  # cancelled or interrupted while the tool ran: its charge is kept
                admission.attempts = attempt
                yield from self._finish_steps(admission, "cancelled", exc)
                raise
            else:
                failed = _failed(value, is_error)
                if failed and token is not None:
                    yield from self._release_steps(_uncounted(charges), token, call.tool)
                wait = retry.next_wait(attempt, slept, None, value) if retry is not None and failed else None
                if wait is None:
                    admission.attempts = attempt
                    yield from self._finish_steps(admission, "error" if failed else "ok", None)
                    return GuardResult(value=value, admission=admission)
                last_error = None
            # Every attempt is charged: a retry reserves again, and stops when the budget is gone.
            try:
                yield _Sleep(wait)
            except GeneratorExit:
                raise
            except BaseException as exc:
                admission.attempts = attempt
                yield from self._finish_steps(admission, "cancelled", exc)
                raise
            slept += wait
            token = None
            if charges:
                again, verdict = yield from self._budget_steps(admission.decision, _Reserve(charges))
                if again.denied:
                    admission.attempts = attempt
                    if last_error is not None:
                        yield from self._finish_steps(admission, "error", last_error)
                        raise last_error
                    yield from self._finish_steps(admission, "error", None)
                    return GuardResult(value=value, admission=admission)
                token = verdict.token if verdict is not None else None
            attempt += 1

    def _finish_steps(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> _Steps[None]:
        if admission.finished:
            return None
        admission.finished = True
        decision = admission.decision
        if admission.token is not None:
            give_back: tuple[LimitCharge, ...] = ()
            if outcome == "denied":  # refused, or admitted but never called: all of it
                give_back = decision.limits
            elif outcome == "error" and error is not None and _never_ran(error):
                give_back = decision.limits  # the transport failed before sending: the tool did not run
            elif outcome == "error" and (error is None or _is_error_result(error)):
                # An error result: the tool reported failure (the limits that count failures keep theirs).
                # Any other exception is ambiguous (the tool may have acted): its charge is kept.
                give_back = _uncounted(decision.limits)
            token, admission.token = admission.token, None
            yield from self._release_steps(give_back, token, decision.tool)
        self._record(admission, outcome, error)
        return None

    def _record(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> list[AuditSink]:
        """Write the call's one event (once); returns the sinks that failed. Never raises."""
        if admission.recorded:
            return []
        admission.recorded = True
        sinks = admission.sinks if admission.sinks is not None else self.audit_sinks
        if not sinks:
            return []
        try:
            event = self._event(admission, outcome, error)
        except Exception as exc:  # auditing must never break the call it records; the event is cut down
            log.error("could not build the audit event for %s (%s)", admission.call.tool, type(exc).__name__)
            event = {"time": iso_time(self.clock()), "tool": str(admission.call.tool), "outcome": outcome}
        failed = emit(sinks, event)
        if failed:
            with self._audit_lock:
                self.audit_failures += len(failed)
        return failed

    def _event(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> dict[str, Any]:
        decision, call = admission.decision, admission.call
        args = call.args if isinstance(call.args, Mapping) else {}
        event: dict[str, Any] = {
            "time": iso_time(self.clock()),
            "call_id": call.call_id if call.call_id is not None else new_call_id(),
            "tool": call.tool,
            "server": call.server,
            "identity": call.identity,
            "session": call.session,
            "decision": decision.action,
            "code": decision.code,
            "rule": decision.rule,
            "reason": scrub(decision.reason, args, decision.redact),
            "policy": decision.policy or self._policy_hash,  # the policy that decided, even across a reload
            "args": summarize_args(args, decision.redact, self._audit_key),
            "outcome": outcome,
            "latency_ms": round((time.perf_counter() - admission.started) * 1000.0, 3),
        }
        if call.run_id is not None:
            event["run_id"] = call.run_id
        ids = trace_ids()
        if ids is not None:
            event["trace_id"], event["span_id"] = ids
        if admission.approval is not None:
            event["approval"] = admission.approval.kind
        if admission.fail_open:
            event["fail_open"] = True
        if admission.attempts > 1:
            event["attempts"] = admission.attempts
        if decision.retry_after_s is not None:
            event["retry_after_s"] = decision.retry_after_s
        if error is not None:
            event["error"] = type(error).__name__
        if admission.shadow is not None:
            add_shadow_fields(event, admission.shadow, args)
        return event

    def _should_wait(self, admission: Admission) -> bool:
        d = admission.decision
        return (
            self.on_rate_limit == "wait"
            and d.code == "rate_limited"
            and d.retry_after_s is not None
            and d.retry_after_s <= self.max_wait_s
        )

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
            try:
                if isinstance(op, _Call):
                    value = _sync_result(op.fn(**op.args))
                elif isinstance(op, _Ask):
                    value = self._ask_sync(op)  # turns every approver failure into an answer
                elif isinstance(op, _Sleep):
                    self.sleep(op.seconds)
                else:
                    value = self._store_sync(op)
            except BaseException as exc:  # handed to the steps: they settle quota and audit, then re-raise
                error = exc

    async def _adrive(self, steps: _Steps[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(op, _Call):
                    # ``fn`` is normally a coroutine function; a plain function's result is used as is.
                    value = op.fn(**op.args)
                    if inspect.isawaitable(value):
                        value = await value
                elif isinstance(op, _Ask):
                    value = await self._ask_async(op)
                elif isinstance(op, _Sleep):
                    await self.asleep(op.seconds)
                else:
                    value = await self._store_async(op)
            except BaseException as exc:
                error = exc

    def _store_sync(self, op: _Check | _Reserve | _Release) -> Any:
        try:
            if self._store_bounded:
                value = _call_in_thread(lambda: _store_op(self.store, op), self.store_timeout_s)
            else:
                value = _store_op(self.store, op)
        except (StoreError, TimeoutError) as exc:
            raise _as_store_error(exc) from exc
        except Exception as exc:  # a third-party store that raised something else still fails closed
            raise _as_store_error(exc) from exc
        return _checked_verdict(op, value)

    async def _store_async(self, op: _Check | _Reserve | _Release) -> Any:
        try:
            if self._store_bounded:
                task = asyncio.ensure_future(_astore_op(self.store, op))
                try:
                    # asyncio.wait, not wait_for: a store that swallows its cancellation must not hold us.
                    done, _ = await asyncio.wait((task,), timeout=self.store_timeout_s)
                except BaseException:
                    task.cancel()
                    raise
                if not done:
                    task.cancel()
                    task.add_done_callback(_consume_outcome)
                    raise TimeoutError(f"no answer within {self.store_timeout_s:g} s")
                value = task.result()
            else:
                value = await _astore_op(self.store, op)
        except Exception as exc:
            raise _as_store_error(exc) from exc
        return _checked_verdict(op, value)

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
        except Exception as exc:
            return self._failed_approver(op, exc)
        return self._answer_of(op, raw)

    def _ask_sync(self, op: _Ask) -> _Answer:
        # The sync caller may itself be inside a running event loop, so nothing here runs a loop in this
        # thread: a sync approver runs on a reused daemon worker, an async one on one long-lived background
        # loop. Either way a hung approver is abandoned at the timeout and never keeps the process alive.
        timeout = op.timeout_s
        if self._sync_approver is None:
            future = asyncio.run_coroutine_threadsafe(self._ask_async(op), background_loop())
            try:
                return future.result(timeout + 1.0)  # _ask_async enforces the timeout; this is a backstop
            except concurrent.futures.TimeoutError:
                future.cancel()
                return _Answer(code="approval_timeout", reason=f"no approval within {timeout:g} s")
        job = WORKERS.submit(self._sync_approver, op.request)
        try:
            raw = job.result(timeout)
        except concurrent.futures.TimeoutError:
            if not job.done():  # the approver is still deciding: abandon it
                return _Answer(code="approval_timeout", reason=f"no approval within {timeout:g} s")
            return self._failed_approver(op, job.exception())
        except Exception as exc:
            return self._failed_approver(op, exc)
        if inspect.isawaitable(raw):  # a sync function that returned a coroutine: await it on the loop
            awaited = asyncio.run_coroutine_threadsafe(_awaited(raw), background_loop())
            try:
                raw = awaited.result(timeout)
            except concurrent.futures.TimeoutError:
                awaited.cancel()
                return _Answer(code="approval_timeout", reason=f"no approval within {timeout:g} s")
            except Exception as exc:
                return self._failed_approver(op, exc)
        return self._answer_of(op, raw)

    def _failed_approver(self, op: _Ask, exc: BaseException | None) -> _Answer:
        # The model is told a human did not approve; the details go to the log, with any redacted argument
        # the approver's message quotes blanked.
        detail = scrub(str(exc), op.request.args, op.redact)
        log.error("approver failed for %s: %s: %s", op.request.tool, type(exc).__name__, detail)
        return _Answer(code="approval_denied", reason="the approval could not be obtained")

    def _answer_of(self, op: _Ask, raw: Any) -> _Answer:
        try:
            return _Answer(decision=coerce_decision(raw))
        except ApprovalError:
            log.error("approver for %s returned an invalid answer (%s)", op.request.tool, type(raw).__name__)
            return _Answer(code="approval_denied", reason="the approver gave no valid answer")

    # -- helpers ---------------------------------------------------------------------------------------

    def _coerce_given(self, approval: Any) -> ApprovalDecision | None:
        if approval is None:
            return None
        try:
            return coerce_decision(approval)
        except ApprovalError as exc:
            # Only the type: a resume value may carry edited arguments, redacted ones included.
            log.error("invalid approval answer (%s): %s", type(approval).__name__, exc)
            return ApprovalDecision.deny("the approval answer was not understood")

    def _deliver(self, result: GuardResult) -> Any:
        if result.violation is None:
            return result.value
        return self.violation(result.violation).to_payload()


class _NeverRan(TypeError):
    """An async tool handed to a sync entry point: its coroutine was closed unstarted, so the tool never ran."""


def _sync_result(value: Any) -> Any:
    # An async tool handed to invoke/run would "succeed" with an un-awaited coroutine as its result.
    if inspect.iscoroutine(value):
        value.close()
        raise _NeverRan("the tool returned a coroutine: call async tools with ainvoke/arun, not invoke/run")
    return value


def _is_error_result(exc: BaseException) -> bool:
    """An exception that carries a tool's error *result*: LangChain's ``ToolException``, which is how
    langchain-mcp-adapters hands on an MCP result marked ``isError``. Read by name: no LangChain import."""
    return any(cls.__name__ == "ToolException" for cls in type(exc).__mro__)


def _never_ran(exc: BaseException) -> bool:
    """The tool is known not to have run: the call was never sent, or never started."""
    return isinstance(exc, _NeverRan) or _not_sent(exc)


def _uncounted(charges: tuple[LimitCharge, ...]) -> tuple[LimitCharge, ...]:
    """The charges a failed call gives back: all but those on a budget key some limit counts failures for.

    A budget key holds one entry per call, so a limit that counts failures keeps it for every limit
    sharing that key (keeping too much is the safe side).
    """
    kept = {c.key for c in charges if c.count_failures}
    return tuple(c for c in charges if c.key not in kept) if kept else charges


def _store_op(store: Store | StoreProtocol, op: _Check | _Reserve | _Release) -> Any:
    if isinstance(op, _Check):
        return store.check(op.charges)
    if isinstance(op, _Reserve):
        return store.reserve(op.charges)
    return store.release(op.charges, op.token)


async def _astore_op(store: Store | StoreProtocol, op: _Check | _Reserve | _Release) -> Any:
    if isinstance(op, _Check):
        return await store.acheck(op.charges)
    if isinstance(op, _Reserve):
        return await store.areserve(op.charges)
    return await store.arelease(op.charges, op.token)


def _checked_verdict(op: _Check | _Reserve | _Release, value: Any) -> Any:
    """A store's answer, or StoreError when it is not a Verdict the guard can act on (fail closed)."""
    if isinstance(op, _Release):
        return None
    if not isinstance(value, Verdict) or type(value.ok) is not bool:
        raise StoreError(f"the store returned {type(value).__name__}, not a Verdict")
    if isinstance(op, _Reserve) and value.ok and value.token is not None and not isinstance(value.token, str):
        raise StoreError(f"the store returned a reservation token of type {type(value.token).__name__}")
    return value


def _as_store_error(exc: Exception) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


_STORE_WORKERS = Workers("mcp-guard-store")


def _call_in_thread(fn: Callable[[], T], timeout_s: float) -> T:
    """``fn()`` on a reused daemon worker, waited for at most ``timeout_s`` (then abandoned: TimeoutError)."""
    job = _STORE_WORKERS.submit(fn)
    try:
        result: T = job.result(timeout_s)
    except concurrent.futures.TimeoutError:
        if not job.done():
            raise TimeoutError(f"no answer within {timeout_s:g} s") from None
        raise
    return result


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


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
