"""The :class:`Guard`: the configuration of a guarded deployment and its public entry points.

The evaluator (:mod:`mcp_guard._policy.policy`) decides, purely; the guard acts on the decision: it checks the
budget, asks a human, reserves quota atomically, calls the tool with retries, gives quota back when the call
is not made or fails, and writes one audit event. How, step by step, is :mod:`mcp_guard._guard.pipeline` (written
once, driven by a sync and an async driver); what it works on is :mod:`mcp_guard._calls.call`; the audit event
is :mod:`mcp_guard._audit.events`'s. This module holds what a caller sees: the options, ``check``/``admit``/
``finish``/``run``/``invoke`` and their async twins (a line or two each), the adapter contract, and living
with a policy (shadow mode, reload, usage).

A Guard *holds* its pipeline (``self._pipeline``, a :class:`~mcp_guard._guard.pipeline.Pipeline` built from the
options frozen in a :class:`~mcp_guard._guard.config.PipelineConfig`): every entry point is one call into it,
so ``Guard.run`` leads straight to ``Pipeline.run_plan`` and ``Pipeline.drive``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, overload

from mcp_guard._audit.events import AuditSink, audit_sinks
from mcp_guard._audit.events import audit_key as audit_key_of
from mcp_guard._calls.approval import Approver, Asker
from mcp_guard._calls.call import Admission, GuardResult, Outcome, ToolCall
from mcp_guard._compat import result_is_error
from mcp_guard._errors import ConfigurationError, PolicyViolation
from mcp_guard._guard.config import PipelineConfig
from mcp_guard._guard.pins import PinWatch, canonical_tool
from mcp_guard._guard.pipeline import NO_RESULT, Pipeline, QuickRun, fault_decision
from mcp_guard._guard.retry import RetryPolicy
from mcp_guard._guard.shadow import Mode, check_mode
from mcp_guard._policy.decision import Decision, round_up
from mcp_guard._policy.policy import Policy, load_policy
from mcp_guard._policy.session import SessionView
from mcp_guard._stores import Store, StoreProtocol, store_from_uri

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mcp_guard._calls.call import AdmitKeywords, CallKeywords, RunKeywords
    from mcp_guard._guard.usage import LimitUsage, UsageKeywords

log = logging.getLogger("mcp_guard")

PolicySource = Union[Policy, "Guard", Mapping[str, Any], str, "os.PathLike[str]"]

T = TypeVar("T")


class _Option(Generic[T]):
    """A :class:`Guard` option, kept in its pipeline's frozen config: read from there; set after the Guard was
    built, a new config is swapped in (one attribute write, so a call in flight reads one config throughout)."""

    name: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, guard: None, owner: type) -> _Option[T]: ...

    @overload
    def __get__(self, guard: Guard, owner: type) -> T: ...

    def __get__(self, guard: Guard | None, owner: type) -> T | _Option[T]:
        if guard is None:
            return self
        value: T = getattr(guard._pipeline.config, self.name)
        return value

    def __set__(self, guard: Guard, value: T) -> None:
        pipeline = guard._pipeline
        change: dict[str, Any] = {self.name: value}
        pipeline.config = dataclasses.replace(pipeline.config, **change)


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
    ``approval_timeout_s`` (a rule's ``approval.timeout_s`` wins). A sync approver runs on a reused worker
    thread so that the timeout can abandon it; ``approval_timeout_s=None`` asks with no timeout instead, a sync
    approver then called in line by the sync entry points (cheapest, but a hung approver hangs the call; the
    async ones still use the worker, as a sync approver on the event loop would stall the loop). An async
    approver runs on the caller's event loop, with or without a timeout. ``audit``: a JSONL path, ``"logging"``, a
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
    refused as ``invalid_arguments`` before the policy runs (on by default).

    Every entry point also takes ``tool_schema``, ``call_id`` (the framework's tool-call id) and ``run_id``
    (its run or thread id), recorded in the audit event.

    An evaluator that raises, a store that fails (closed mode), an approver that raises, hangs or answers
    nonsense: each ends in a structured denial, never in an allowed call.

    ``mode``: ``"shadow"`` audits what would be refused and refuses nothing; ``"enforce"`` enforces even rules
    the policy puts in shadow; ``None`` (default) lets the policy's ``mode`` fields decide. ``reload=True``
    watches the policy file and swaps in each valid new version within about a second, however the file is
    changed: edited in place, renamed over, or a symlink's target swapped (a Kubernetes ConfigMap); it uses
    file events (extra ``reload``) and looks every half second besides. ``reload="poll"`` only looks (file
    systems without events; no extra needed; ``$MCP_GUARD_RELOAD_POLL=1`` forces it for ``reload=True`` too).
    :meth:`reload` does it by hand; :meth:`close` stops the watcher. ``metrics``: ``True`` or an OpenTelemetry
    ``MeterProvider`` records ``mcp_guard.decisions`` and ``mcp_guard.guard.duration`` (extra ``otel``).
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
        approval_timeout_s: float | None = 300.0,
        retry: RetryPolicy | bool | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        check_tool_schema: bool = True,
        audit_failure: Literal["open", "closed"] = "open",
        audit_key: str | bytes | None = None,
        store_timeout_s: float = 5.0,
        mode: Mode | None = None,
        reload: bool | Literal["poll"] = False,
        metrics: Any = False,
        session_memory_bytes: int = 256 * 1024,
        session_ttl_s: float = 86_400.0,
    ) -> None:
        if on_rate_limit not in ("error", "wait"):
            raise ValueError(f"on_rate_limit must be 'error' or 'wait', not {on_rate_limit!r}")
        if on_violation not in ("return", "raise"):
            raise ValueError(f"on_violation must be 'return' or 'raise', not {on_violation!r}")
        if fail_mode not in ("closed", "open"):
            raise ValueError(f"fail_mode must be 'closed' or 'open', not {fail_mode!r}")
        if not max_wait_s >= 0 or (approval_timeout_s is not None and not approval_timeout_s > 0):  # NaN refused
            raise ValueError("max_wait_s must be >= 0 and approval_timeout_s > 0 (or None)")
        if audit_failure not in ("open", "closed"):
            raise ConfigurationError(f"audit_failure must be 'open' or 'closed', not {audit_failure!r}")
        if type(session_memory_bytes) is not int or session_memory_bytes < 1:
            raise ConfigurationError(f"session_memory_bytes must be a positive integer, not {session_memory_bytes!r}")
        if not 0 < session_ttl_s < float("inf"):
            raise ConfigurationError(f"session_ttl_s must be a positive number of seconds, not {session_ttl_s!r}")
        if not 0 < store_timeout_s < float("inf"):
            raise ConfigurationError(f"store_timeout_s must be a positive number of seconds, not {store_timeout_s!r}")
        if reload not in (False, True, "poll"):
            raise ValueError(f"reload must be True, False or 'poll', not {reload!r}")
        loaded = policy.policy if isinstance(policy, Guard) else load_policy(policy)
        # The memory store keeps its own monotonic clock unless a clock is injected (tests move a FakeClock).
        store_options: dict[str, Any] = {} if clock is None else {"clock": clock}
        sinks = audit_sinks(audit)
        if metrics:
            from mcp_guard._audit.metrics import metrics_sink

            sinks = (*sinks, metrics_sink(metrics))
        if retry is None or retry is True:
            retry = RetryPolicy()
        config = PipelineConfig(
            store=store_from_uri(store, **store_options) if isinstance(store, str) else store,
            store_timeout_s=float(store_timeout_s),
            asker=Asker.of(approver),  # normalised once: sync or async, asked from sync or async code
            audit_sinks=sinks,
            audit_failure=audit_failure,
            audit_key=audit_key_of(audit_key),
            on_rate_limit=on_rate_limit,
            max_wait_s=float(max_wait_s),
            fail_mode=fail_mode,
            approval_timeout_s=None if approval_timeout_s is None else float(approval_timeout_s),
            retry=retry or None,
            clock=clock if clock is not None else time.time,
            sleep=sleep,
            asleep=asleep,
            check_tool_schema=bool(check_tool_schema),
            session_memory_bytes=session_memory_bytes,
            session_ttl_s=float(session_ttl_s),
            mode=check_mode(mode),
        )
        self._pipeline = Pipeline(config, loaded, PinWatch.for_policy(loaded))
        self._approver = approver
        self.on_violation = on_violation
        # Living with a policy (spec section 9): each costs nothing per call unless asked for.
        self._reload_lock = threading.Lock()
        self._reload_listeners: list[Callable[[Policy], None]] = []
        self._policy_path: str | os.PathLike[str] | None = policy if isinstance(policy, (str, os.PathLike)) else None
        self._pin_warned: set[str] = set()  # listed hashes already warned about (once each, not per listing)
        self._watcher: Any = None
        if reload:
            if self._policy_path is None:
                raise ValueError("reload=True needs a policy file path to watch")
            from mcp_guard._guard.reload import PolicyWatcher

            self._watcher = PolicyWatcher(self, self._policy_path, poll=reload == "poll").start()

    # -- the options, kept in the pipeline's frozen config (see the class docstring for each) --------------

    store = _Option[Store | StoreProtocol]()
    store_timeout_s = _Option[float]()
    audit_sinks = _Option[tuple[AuditSink, ...]]()
    audit_failure = _Option[Literal["open", "closed"]]()
    on_rate_limit = _Option[Literal["error", "wait"]]()
    max_wait_s = _Option[float]()
    fail_mode = _Option[Literal["closed", "open"]]()
    approval_timeout_s = _Option[float | None]()
    retry = _Option[RetryPolicy | None]()
    clock = _Option[Callable[[], float]]()
    sleep = _Option[Callable[[float], None]]()
    asleep = _Option[Callable[[float], Awaitable[None]]]()
    check_tool_schema = _Option[bool]()
    session_memory_bytes = _Option[int]()
    session_ttl_s = _Option[float]()
    mode = _Option[Mode | None]()

    @property
    def policy(self) -> Policy:
        """The policy in force (a reload swaps it; a call already started keeps the one it started with)."""
        return self._pipeline.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._pipeline.use_policy(policy, self._pipeline.pins)

    @property
    def approver(self) -> Approver | None:
        return self._approver

    @approver.setter
    def approver(self, approver: Approver | None) -> None:
        self._approver = approver
        self._pipeline.config = dataclasses.replace(self._pipeline.config, asker=Asker.of(approver))

    @property
    def audit_failures(self) -> int:
        """Audit writes that failed (one per sink per event), counted in both modes."""
        return self._pipeline.audit_failures

    def with_approver(self, approver: Approver | None) -> Guard:
        """A view of this guard that asks ``approver`` instead: same policy, store, audit sinks and options.

        A shallow copy, cheap enough to make per call (the MCP proxy asks each client that can answer
        elicitation through its own view); state that changes later, such as a reloaded policy, is shared
        only if it lives in a shared object, so make views per call rather than keeping them.
        """
        view = copy.copy(self)
        view._pipeline = self._pipeline.copy()
        view.approver = approver
        return view

    def __repr__(self) -> str:
        return f"Guard(policy={self.policy.hash[:15]}…, store={type(self.store).__name__})"

    # -- public entry points: each drives the pipeline's steps (sync or async), nothing more --------------

    def check(self, tool: str, args: Mapping[str, Any] | None = None, **call: Unpack[CallKeywords]) -> Decision:
        """Steps 1-4 without side effects: the decision, and whether budget remains (nothing reserved).

        For a pre-flight look (e.g. before pausing for a human); it does not admit the call: a later
        :meth:`admit` may still be refused if other callers take the budget meanwhile. Every entry point
        takes the keywords ``server``, ``identity``, ``session``, ``annotations``, ``tool_schema``,
        ``call_id`` (the framework's tool-call id), ``run_id`` (its run or thread id), ``context`` (the
        framework's context object, for ``context.*`` conditions) and ``claims`` (a verified token's claims,
        for ``claims.*``).
        """
        return self._pipeline.drive(self._pipeline.check_plan(tool, args, call))

    async def acheck(self, tool: str, args: Mapping[str, Any] | None = None, **call: Unpack[CallKeywords]) -> Decision:
        """:meth:`check` for async callers (the store is asked without blocking the event loop)."""
        return await self._pipeline.adrive(self._pipeline.check_plan(tool, args, call))

    def admit(self, tool: str, args: Mapping[str, Any] | None = None, **call: Unpack[AdmitKeywords]) -> Admission:
        """Steps 1-6: decide, ask for approval (unless ``approval`` is given), reserve. Nothing is called.

        Always follow with :meth:`finish`, or quota reserved for a call that is never made stays used
        until its window passes. ``approval`` is an answer obtained elsewhere (a LangGraph resume value,
        an Agents SDK approval): ``True``/``False``, an :class:`ApprovalDecision` or a resume dict.
        """
        return self._pipeline.drive(self._pipeline.admit_plan(tool, args, call))

    async def aadmit(
        self, tool: str, args: Mapping[str, Any] | None = None, **call: Unpack[AdmitKeywords]
    ) -> Admission:
        """:meth:`admit` for async callers; always follow with :meth:`afinish`."""
        return await self._pipeline.adrive(self._pipeline.admit_plan(tool, args, call))

    @overload
    def finish(self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None) -> None: ...

    @overload
    def finish(
        self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None, result: Any
    ) -> GuardResult: ...

    def finish(
        self,
        admission: Admission,
        outcome: Outcome = "ok",
        *,
        error: BaseException | None = None,
        result: Any = NO_RESULT,
    ) -> GuardResult | None:
        """Step 7's bookkeeping and step 8: give quota back where due, write the audit event. Idempotent.

        ``outcome``: ``"ok"``; ``"error"`` with no ``error`` (the tool returned an error result: quota back
        unless the limit counts failures); ``"error"`` with the ``error`` it raised (quota kept: the tool may
        have acted, unless the error shows the call was never sent, e.g. a refused connection);
        ``"denied"`` (the tool never ran: refused, or admitted and then not called; all quota back);
        ``"admitted"`` (handed on, result not known here) and ``"cancelled"`` (cancelled after it was handed
        on): nothing given back.

        ``result``: what the tool returned, for adapters that call tools themselves. The
        policy's result rules judge it and session memory keeps it; the returned :class:`GuardResult` has the
        ``value`` to hand the model (the result, or a redacted copy) or, when a rule withheld it, the
        ``violation`` (``result_withheld``) to hand it instead. Without ``result``, returns None.
        """
        return self._pipeline.drive(self._pipeline.finish_plan(admission, outcome, error, result))

    @overload
    async def afinish(
        self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None
    ) -> None: ...

    @overload
    async def afinish(
        self, admission: Admission, outcome: Outcome = "ok", *, error: BaseException | None = None, result: Any
    ) -> GuardResult: ...

    async def afinish(
        self,
        admission: Admission,
        outcome: Outcome = "ok",
        *,
        error: BaseException | None = None,
        result: Any = NO_RESULT,
    ) -> GuardResult | None:
        """:meth:`finish` for async callers."""
        return await self._pipeline.adrive(self._pipeline.finish_plan(admission, outcome, error, result))

    # -- session memory (spec section 11) -------------------------------------------------------------

    def observe_input(self, text: str, *, session: str | None) -> None:
        """Remember ``text`` as the user's own request in ``session``'s memory (trusted, for ``from: [user]``).

        Adapters call it with the user's messages; call it yourself for any other way a user's words reach the
        agent. A no-op without a session, or when no check of the policy reads the user's requests.
        """
        self._pipeline.drive(self._pipeline.observe_plan(text, session))

    async def aobserve_input(self, text: str, *, session: str | None) -> None:
        """:meth:`observe_input` for async callers."""
        await self._pipeline.adrive(self._pipeline.observe_plan(text, session))

    def session_view(self, session: str) -> SessionView:
        """What the guard remembers of ``session`` (the parts the policy's checks read), as the policy sees it.

        Reads the store; changes nothing. A view of a session the policy needs nothing of is empty.
        """
        return self._pipeline.drive(self._pipeline.session_view_steps(session))

    async def asession_view(self, session: str) -> SessionView:
        """:meth:`session_view` for async callers."""
        return await self._pipeline.adrive(self._pipeline.session_view_steps(session))

    def run(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **call: Unpack[RunKeywords]
    ) -> GuardResult:
        """The whole pipeline around ``fn(**args)``, never raising a violation: see :class:`GuardResult`.

        The tool's own exceptions propagate (after quota is given back and the event is written); the guard's
        own faults refuse the call (``guard_unavailable``). ``is_error`` tells whether a returned value is a
        failed call (default: :meth:`is_error_result`). Takes :meth:`admit`'s keywords too.
        """
        plan = self._pipeline.run_plan(tool, args, fn, call)
        if isinstance(plan, QuickRun):  # decided at once: refused, or a plain call with nothing to count, ask or retry
            return plan.call(fn)
        return self._pipeline.drive(plan)  # the steps, driven as tenacity drives a call: what next, then do it

    async def arun(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **call: Unpack[RunKeywords]
    ) -> GuardResult:
        """:meth:`run` for async tools: awaits ``fn(**args)`` (a sync ``fn``'s result is used as is)."""
        plan = self._pipeline.run_plan(tool, args, fn, call)
        if isinstance(plan, QuickRun):
            return await plan.acall(fn)
        return await self._pipeline.adrive(plan)

    def invoke(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **call: Unpack[RunKeywords]
    ) -> Any:
        """Run ``fn(**args)`` under the policy; return its result, or the violation payload (or raise).

        Takes the keyword arguments of :meth:`run`.
        """
        return self._deliver(self.run(tool, args, fn, **call))

    async def ainvoke(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], **call: Unpack[RunKeywords]
    ) -> Any:
        """:meth:`invoke` for async tools: awaits ``fn(**args)`` (a sync ``fn``'s result is used as is)."""
        return self._deliver(await self.arun(tool, args, fn, **call))

    def _deliver(self, result: GuardResult) -> Any:
        if result.violation is None:
            return result.value
        return self.violation(result.violation).to_payload()

    # -- the adapter contract: what every framework adapter needs, so that adapters only translate -----

    def refuse(self, call: ToolCall, decision: Decision, *, deliver: bool = True) -> Decision:
        """Audit a refusal decided outside the pipeline as the call's one event, then apply ``on_violation``.

        For calls the policy never sees as such: argument text that is not a JSON object (:meth:`malformed`),
        a human's rejection through the framework (:meth:`rejected`). Returns the decision to show the
        model, or raises :class:`PolicyViolation` when ``on_violation="raise"``. ``deliver=False`` only audits
        and returns the decision: for a refusal recorded after the fact, where no caller waits for an exception.
        """
        self.finish(Admission(call, decision), "denied")
        return self.violation(decision) if deliver else decision

    async def arefuse(self, call: ToolCall, decision: Decision, *, deliver: bool = True) -> Decision:
        """:meth:`refuse` for async callers."""
        await self.afinish(Admission(call, decision), "denied")
        return self.violation(decision) if deliver else decision

    def violation(self, decision: Decision) -> Decision:
        """The one place ``on_violation`` is applied: ``"raise"`` raises :class:`PolicyViolation`, otherwise the
        decision comes back for the adapter to hand to the model in its framework's shape."""
        if self.on_violation == "raise":
            raise PolicyViolation(decision)
        return decision

    def malformed(self, tool: str, problem: str | None, *, server: str | None = None) -> Decision:
        """The ``invalid_arguments`` refusal for argument text that is not a JSON object."""
        return Decision.malformed(tool, problem, server=server, policy=self.policy.hash)

    def rejected(self, call: ToolCall, reason: str) -> Decision:
        """The ``approval_denied`` refusal for a call a human rejected, naming the rule that asked for approval."""
        return self._pipeline.evaluate(call._replace(tool_schema=None)).rejected(reason)

    def unavailable(self, tool: str, exc: BaseException, *, server: str | None = None) -> Decision:
        """The ``guard_unavailable`` refusal for a fault of the guard itself (fail closed, never end a run).

        The log gets the exception's type and traceback; the model gets only its type (its text may quote
        arguments, redacted ones included).
        """
        return fault_decision(tool, exc, server, self.policy)

    @staticmethod
    def is_error_result(value: Any) -> bool:
        """A tool's returned value is a failed call: an MCP result with ``isError`` (mcp 1 and 2 spellings), or
        a LangChain ``ToolMessage`` with ``status="error"``."""
        return result_is_error(value)

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

    def exposes(self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None) -> bool:
        """Whether adapters should show ``tool`` to the model: :meth:`Policy.exposes`, except that a tool hidden or
        denied outright by a rule in shadow mode stays visible (in shadow nothing is refused, so nothing is hidden).
        """
        policy = self.policy
        if policy.exposes(tool, server=server, annotations=annotations):
            return True
        if self._pipeline.shadow is None:
            return False
        return (
            self._pipeline.shadow.mode_of(policy.evaluate(tool, {}, server=server, annotations=annotations)) == "shadow"
        )

    @property
    def pinning(self) -> bool:
        """True when the policy pins tools (a ``pins`` block): adapters then pass every listing to :meth:`listed`."""
        return self._pipeline.pins is not None

    def listed(
        self,
        tool: str,
        *,
        server: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> bool:
        """A tool as a server listed it: whether adapters should show it to the model.

        :meth:`exposes`, and, when the policy pins tools (``pins``), the listing is compared with the lock file:
        a tool that changed or is new is remembered for its calls (refused with ``tool_changed`` or held for a
        human, as ``on_change``/``on_new`` say) and left out here when the policy says ``hide``. Adapters call
        this on every listing they see, with what the server said about the tool.
        """
        shown = self.exposes(tool, server=server, annotations=annotations)
        pins = self._pipeline.pins
        if pins is None:
            return shown
        verdict = pins.listed(canonical_tool(tool, description, input_schema, annotations), server)
        if verdict.drifted:
            if verdict.new_hash not in self._pin_warned:
                self._pin_warned.add(verdict.new_hash)
                log.warning("pins: %s", verdict.describe())
            pointer = "/pins/on_change" if verdict.status == "changed" else "/pins/on_new"
            # In shadow nothing is refused, so nothing is hidden: the call's would-be refusal is audited instead.
            shadow = (
                self._pipeline.shadow is not None
                and self._pipeline.shadow.mode_at(pointer, self.policy.hash) == "shadow"
            )
            if pins.action_for(verdict) == "hide" and not shadow:
                return False
        return shown

    def reload(self, source: Any = None) -> bool:
        """Load the policy file again (or ``source``: a path, dict or Policy) and put it in force if valid.

        True when a new policy is now in force. An invalid one leaves the old in force, is logged and audited
        (``{"event": "policy_reload", "ok": false, ...}``), and returns False; so does an unchanged file.
        Counters are kept: they live in the store by counter name and scope.
        """
        from mcp_guard._guard.reload import reload_policy

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

    def usage(self, **where: Unpack[UsageKeywords]) -> list[LimitUsage]:
        """Per limit: units used, max, remaining, and when the next unit frees up (:class:`LimitUsage`).

        Keywords ``identity``, ``session``, ``tool``, ``server``, ``annotations``. With ``tool``, the limits a
        call of that tool would be charged; without, every limit in the policy (per-tool limits only for rules
        that name one tool). Reads the store, changes nothing.
        """
        from mcp_guard._guard.usage import report_usage, usage_charges

        return report_usage(self.store, usage_charges(self.policy, **where), self.clock)

    async def ausage(self, **where: Unpack[UsageKeywords]) -> list[LimitUsage]:
        """:meth:`usage` for async callers."""
        from mcp_guard._guard.usage import areport_usage, usage_charges

        return await areport_usage(self.store, usage_charges(self.policy, **where), self.clock)


def as_guard(source: PolicySource, **options: Any) -> Guard:
    """A :class:`Guard` from a Guard (returned as is; ``options`` must then be empty), a Policy, a path or a dict."""
    if isinstance(source, Guard):
        if options:
            raise TypeError(f"options {sorted(options)} are for a new Guard; configure the Guard you passed instead")
        return source
    return Guard(source, **options)


__all__ = ["Admission", "Guard", "GuardResult", "PolicySource", "ToolCall", "as_guard", "round_up"]
