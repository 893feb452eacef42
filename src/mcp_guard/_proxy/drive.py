"""A guarded tool call's steps driven on the relay's own turns: no task and no reply future per call.

``Guard.arun`` drives a call's steps (:mod:`mcp_guard._guard.pipeline`) from a coroutine, so the relay had to
give every ``tools/call`` a task, and its upstream answer a future that woke that task: two more event-loop
turns per call, on a path whose other costs are a few microseconds each. Here the same steps, unchanged, are
stepped from the relay's callbacks instead:

- on the turn that read the client's request, the call is decided, its quota reserved in the memory store
  (in-process, never blocking) and the request written upstream; the steps then wait, suspended, in the
  relay's table of pending requests;
- on the turn that read the upstream's answer, the steps are sent that answer and run to their end (the
  quota settled, the one audit event written), and the answer goes to the client.

Whatever cannot be done in line (asking a human, waiting out a rate-limit window, a Redis or third-party store,
listing the upstream's tools first) is handed, from that op on, to a task that awaits it exactly as
``Guard.arun`` would. A cancellation or an upstream that fails is thrown into the steps as the awaited call's
exception would be, so the steps write the same events and keep the same charges as under ``arun``.

The steps are the pipeline's own (``Guard._run_plan``); this module only performs their ops. It relies on
three pipeline internals, named here so a change there is seen: ``_run_plan`` (the plan of ``arun``),
``_store_sync`` and ``_aperform`` (how the sync and async drivers perform one op).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mcp_guard._calls.call import Admission, GuardResult
from mcp_guard._calls.ops import Call, Check, Release, Reserve, Steps
from mcp_guard._guard.pipeline import PlainCall
from mcp_guard._stores.memory import MemoryStore

if TYPE_CHECKING:
    from mcp_guard._guard.guard import Guard

# The store ops the memory store answers in line: in-process, under a lock held for microseconds.
_INLINE_OPS = (Reserve, Release, Check)


class Host(Protocol):
    """What a :class:`CallDriver` needs of the relay."""

    def send_call(self, driver: CallDriver, args: Mapping[str, Any]) -> Any:
        """Write the call upstream with ``args``; None when sent (the answer comes to ``driver.advance``), else
        the reply to use at once (the upstream has ended)."""

    async def request_call(self, driver: CallDriver, args: Mapping[str, Any]) -> Any:
        """Send the call upstream and await its answer (for a call handed to a task)."""

    def call_done(self, driver: CallDriver, result: GuardResult) -> None: ...

    def call_raised(self, driver: CallDriver, exc: BaseException) -> None: ...

    def call_task(self, driver: CallDriver, task: asyncio.Task[None]) -> None:
        """The call continues in ``task`` (so a cancellation can reach it)."""


def forward_marker(**_: Any) -> Any:
    """The tool function handed to the plan: the driver sends the call itself when the steps ask for it."""
    raise RuntimeError("a relayed call is sent by its driver")  # pragma: no cover - never called


class CallDriver:
    """One ``tools/call`` from its plan to its result. ``rid``: the client's id; ``early``: the answer went to
    the client before the steps ended (see ``Relay._answered``)."""

    __slots__ = ("early", "guard", "host", "inline_store", "rid", "session_free", "steps")

    def __init__(self, host: Host, rid: Any, guard: Guard, steps: Steps[GuardResult], session_free: bool) -> None:
        self.host = host
        self.rid = rid
        self.guard = guard
        self.steps = steps
        self.session_free = session_free
        self.early = False
        # A built-in memory store answers in line; any other store is awaited in a task (its I/O would block).
        self.inline_store = type(guard.store) is MemoryStore

    def advance(self, value: Any, error: BaseException | None) -> None:
        """Send ``value`` (or throw ``error``) into the steps and perform their ops in line until they wait
        for the upstream, need a task, or end."""
        steps = self.steps
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                self.host.call_done(self, stop.value)
                return
            except BaseException as exc:  # the call's own outcome: cancelled, upstream failed, a fault
                self.host.call_raised(self, exc)
                return
            value, error = None, None
            if type(op) is Call:
                value = self.host.send_call(self, op.args)
                if value is None:
                    return  # suspended until the upstream answers
            elif self.inline_store and isinstance(op, _INLINE_OPS):
                try:
                    value = self.guard._store_sync(op)
                except BaseException as exc:  # handed to the steps, as the drivers do
                    error = exc
            else:
                task = asyncio.get_running_loop().create_task(self._rest(op))
                self.host.call_task(self, task)
                return

    async def _rest(self, op: Any) -> None:
        """The rest of the call in a task, from ``op`` on: what ``Guard._adrive`` does."""
        steps = self.steps
        while True:
            value: Any = None
            error: BaseException | None = None
            try:
                if type(op) is Call:
                    value = await self.host.request_call(self, op.args)
                else:
                    value = await self.guard._aperform(op)
            except BaseException as exc:
                error = exc
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                self.host.call_done(self, stop.value)
                return
            except BaseException as exc:
                self.host.call_raised(self, exc)
                return


def plan_steps(
    guard: Guard, tool: str, args: Mapping[str, Any], keywords: dict[str, Any]
) -> tuple[GuardResult | Steps[GuardResult], bool]:
    """The call's plan as ``arun`` makes it, as steps (or a result, refused outright), and whether the answer
    can go to the client before the steps end (no result rule or session memory can change or withhold it)."""
    before = guard.policy
    plan = guard._run_plan(tool, args, forward_marker, keywords)  # type: ignore[arg-type]
    # The plan read guard.policy once, between these two reads: if both are the same policy, it is the call's.
    session_free = guard.policy is before and before.session_free
    if isinstance(plan, GuardResult):
        return plan, session_free
    if isinstance(plan, Admission):
        return _bare(plan), session_free
    if isinstance(plan, PlainCall):
        return _plain(plan), session_free
    return plan, session_free


def _bare(admission: Admission) -> Steps[GuardResult]:
    # Allowed, nothing to count and no event to write: the call, and its value.
    value = yield Call(forward_marker, admission.call.args)
    return GuardResult(value, None, admission)


def _plain(plain: PlainCall) -> Steps[GuardResult]:
    # Allowed, nothing to count or retry: the call, then its event (PlainCall records a failure as it passes).
    with plain as arguments:
        value = yield Call(forward_marker, arguments)
    return plain.result(value)


__all__ = ["CallDriver", "Host", "plan_steps"]
