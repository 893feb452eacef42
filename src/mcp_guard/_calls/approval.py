"""Human approval: what an approver is asked (:class:`ApprovalRequest`) and what it answers (:class:`ApprovalDecision`).

An approver is any callable taking an :class:`ApprovalRequest` and returning ``bool`` or an
:class:`ApprovalDecision`, sync or async. The guard normalises it once (:class:`Asker`), bounds it with a
timeout (unless the Guard's is ``None``), and turns anything else it does (raise, hang, return garbage) into a
denial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import json
import queue
import sys
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO, TypeAlias

from mcp_guard._errors import ApprovalError


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A call that needs a human's yes, with everything a person needs to decide."""

    tool: str
    args: Mapping[str, Any]
    server: str | None = None
    identity: str | None = None
    session: str | None = None
    rule: str | None = None
    reason: str | None = None
    risk_class: str | None = None
    description: str | None = None
    timeout_s: float | None = None
    redact: tuple[str, ...] | None = None
    """The rule's ``redact`` paths: argument values a person's screen must not show (None: not known)."""


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """An approver's answer: approve, deny (with a reason the model sees), or approve with edited arguments.

    Build with :meth:`approve`, :meth:`deny` or :meth:`edit`.

    A yes may be a *grant* that also covers later calls, so identical calls do not ask again:
    ``scope="session"`` covers the rest of the call's session, ``ttl_s`` the next ``ttl_s`` seconds (both: the
    session, for at most ``ttl_s``). A grant covers the same tool, the same canonical arguments (the ones that
    will run, after an edit) and the same identity, under the same rule; ``any_args=True`` (``args="any"`` in
    :meth:`approve`) widens it to any arguments. Grants live in the store, so every worker honours them; a
    reload that changes the rule drops them. ``grant`` is the id of the grant that answered (set by the guard).
    """

    kind: Literal["approve", "deny", "edit"]
    reason: str | None = None
    args: Mapping[str, Any] | None = field(default=None)
    scope: Literal["once", "session"] = "once"
    ttl_s: float | None = None
    any_args: bool = False
    grant: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in ("once", "session"):
            raise ApprovalError(f"scope must be 'once' or 'session', not {self.scope!r}")
        if self.ttl_s is not None and (
            isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, (int, float)) or not 0 < self.ttl_s < 1e9
        ):
            raise ApprovalError(f"ttl_s must be a positive number of seconds, not {self.ttl_s!r}")

    @classmethod
    def approve(
        cls,
        *,
        scope: Literal["once", "session"] = "once",
        ttl_s: float | None = None,
        args: Literal["any"] | None = None,
    ) -> ApprovalDecision:
        """Yes, for this call (``scope="once"``), or as a grant for later identical calls (see the class)."""
        if args not in (None, "any"):
            raise ApprovalError("approve(args=...) takes only 'any' (to widen a grant to any arguments); use edit()")
        return cls("approve", scope=scope, ttl_s=ttl_s, any_args=args == "any")

    @classmethod
    def deny(cls, reason: str | None = None) -> ApprovalDecision:
        return cls("deny", reason=reason)

    @classmethod
    def edit(
        cls, args: Mapping[str, Any], *, scope: Literal["once", "session"] = "once", ttl_s: float | None = None
    ) -> ApprovalDecision:
        return cls("edit", args=dict(args), scope=scope, ttl_s=ttl_s)

    @property
    def grants(self) -> bool:
        """True when this yes also covers later calls (a session scope or a time to live)."""
        return self.kind != "deny" and (self.scope != "once" or self.ttl_s is not None)

    @property
    def approved(self) -> bool:
        return self.kind != "deny"

    def replace(self, **changes: Any) -> ApprovalDecision:
        return dataclasses.replace(self, **changes)


_YES = ApprovalDecision.approve()
_NO = ApprovalDecision.deny()

ApproverResult: TypeAlias = bool | ApprovalDecision
Approver: TypeAlias = Callable[[ApprovalRequest], ApproverResult | Awaitable[ApproverResult]]
AsyncApprover: TypeAlias = Callable[[ApprovalRequest], Awaitable[ApproverResult]]


def coerce_decision(value: object) -> ApprovalDecision:
    """Turn what an approver (or a resume value) returned into an :class:`ApprovalDecision`.

    Accepts ``True``/``False``, an :class:`ApprovalDecision`, or a dict ``{"type": "approve"}``,
    ``{"type": "reject", "message": ...}``, ``{"type": "edit", "args": {...}}`` (LangGraph's resume shape).
    Anything else raises :class:`ApprovalError`: the caller denies.
    """
    if isinstance(value, ApprovalDecision):
        if value.kind == "edit" and not isinstance(value.args, Mapping):
            raise ApprovalError("an 'edit' approval must carry the edited arguments as a mapping")
        return value
    if value is True:
        return _YES  # frozen: one shared yes, as building one costs more than the rest of asking a fast approver
    if value is False:
        return _NO
    if isinstance(value, Mapping):
        kind = value.get("type", value.get("decision"))
        scope, ttl_s = _grant_of(value)
        if kind in ("approve", "accept", "approved"):
            widen = value.get("args")
            if widen not in (None, "any"):
                raise ApprovalError("an 'approve' decision takes 'args' only as \"any\" (widening a grant)")
            return ApprovalDecision.approve(scope=scope, ttl_s=ttl_s, args=widen)
        if kind in ("reject", "deny", "denied"):
            message = value.get("message", value.get("reason"))
            return ApprovalDecision.deny(message if isinstance(message, str) else None)
        if kind == "edit":
            args = value.get("args")
            edited = value.get("edited_action")  # LangChain HumanInTheLoopMiddleware's shape
            if args is None and isinstance(edited, Mapping):
                args = edited.get("args")
            if isinstance(args, Mapping):
                return ApprovalDecision.edit(args, scope=scope, ttl_s=ttl_s)
            raise ApprovalError("an 'edit' decision needs 'args' as an object")
    raise ApprovalError(f"approver returned {type(value).__name__}, expected bool or ApprovalDecision")


def _grant_of(value: Mapping[str, Any]) -> tuple[Literal["once", "session"], float | None]:
    """The grant a resume dict asks for: ``"scope": "once" | "session"`` and ``"ttl_s": seconds``."""
    scope = value.get("scope", "once")
    if scope not in ("once", "session"):
        raise ApprovalError(f"'scope' must be 'once' or 'session', not {scope!r}")
    ttl_s = value.get("ttl_s")
    if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float))):
        raise ApprovalError("'ttl_s' must be a number of seconds")
    return scope, None if ttl_s is None else float(ttl_s)


def is_async_callable(fn: object) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    )


def as_async_approver(approver: Approver) -> AsyncApprover:
    """Normalise a sync or async approver once into an async one (for callers that only await, e.g. the proxy).

    Sync approvers run on a reused daemon worker (:data:`WORKERS`), so a slow console prompt never blocks the
    event loop, can be timed out, and a hung one cannot keep the process (or ``asyncio.run``) from exiting.
    """
    if is_async_callable(approver):
        return approver  # type: ignore[return-value]

    async def call_sync(request: ApprovalRequest) -> ApproverResult:
        result: Any = await run_in_daemon_thread(approver, request)
        if inspect.isawaitable(result):  # a sync function that returned a coroutine
            result = await result
        answer: ApproverResult = result
        return answer

    functools.update_wrapper(call_sync, approver)
    return call_sync


Asked: TypeAlias = tuple[Any, BaseException | None]
"""What asking came to: ``(answer, None)``, or ``(None, exception)``; :class:`NoAnswer` when none came in time."""


class NoAnswer(TimeoutError):
    """No answer within the timeout (the job was abandoned); not a TimeoutError the job itself raised."""


class Asker:
    """An approver normalised once (when the Guard is built or given one): asked from sync code with :meth:`ask`,
    from async code with :meth:`aask`, each bounded by a timeout and never raising what the approver raised.

    A sync approver runs on a reused daemon worker (no thread and no event loop made per approval), except with
    no timeout (``None``) from sync code, where it is called in line on the calling thread: the deployment has
    accepted that a hung approver hangs the call, so the worker would buy nothing. From async code a sync
    approver always runs on the worker (waited for without a bound when the timeout is ``None``): called on
    the event loop's thread it would stall every other task of the loop, not only its own call.

    An async approver runs on the caller's loop in a task of its own, started at once (:func:`started`): an
    answer that needs no waiting costs no thread, no timer and at most one loop turn; for sync callers it
    runs on one long-lived background loop. A hung approver is abandoned at the timeout and never keeps the
    process alive.
    """

    __slots__ = ("approver",)

    def __init__(self, approver: Approver) -> None:
        self.approver = approver

    @staticmethod
    def of(approver: Approver | None) -> Asker | None:
        if approver is None:
            return None
        return _AsyncAsker(approver) if is_async_callable(approver) else Asker(approver)

    def ask(self, request: ApprovalRequest, timeout: float | None) -> Asked:
        if timeout is None:
            return _in_line(self.approver, request)
        return WORKERS.call(timeout, _settled, self.approver, request)

    async def aask(self, request: ApprovalRequest, timeout: float | None) -> Asked:
        return await within(asyncio.wrap_future(WORKERS.submit(_settled, self.approver, request)), timeout)


class _AsyncAsker(Asker):
    __slots__ = ()

    def ask(self, request: ApprovalRequest, timeout: float | None) -> Asked:
        future = asyncio.run_coroutine_threadsafe(self.aask(request, timeout), background_loop())
        try:
            # aask enforces the timeout; this is a backstop
            return future.result(None if timeout is None else timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return None, NoAnswer(f"no answer within {timeout:g} s")

    async def aask(self, request: ApprovalRequest, timeout: float | None) -> Asked:
        try:
            answer = self.approver(request)
        except Exception as exc:  # an async callable that failed before making its coroutine
            return None, exc
        if not inspect.iscoroutine(answer):  # an awaitable of another kind (a future): awaited as before
            return await within(answer, timeout)  # type: ignore[arg-type]  # an async approver
        return await started(answer, timeout)


def _in_line(approver: Approver, request: ApprovalRequest) -> Asked:
    """``approver(request)`` on the calling thread, with no bound (the caller chose no timeout)."""
    try:
        return _settled(approver, request), None
    except Exception as exc:  # KeyboardInterrupt, SystemExit: not an answer, they propagate
        return None, exc


def _settled(approver: Approver, request: ApprovalRequest) -> Any:
    """``approver(request)`` on a worker; a sync function that returned a coroutine has it awaited there."""
    answer = approver(request)
    if answer is True or answer is False or isinstance(answer, ApprovalDecision):  # the usual answers
        return answer
    if inspect.isawaitable(answer):
        return asyncio.run_coroutine_threadsafe(_awaited(answer), background_loop()).result(request.timeout_s)
    return answer


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


async def within(awaitable: Awaitable[Any], timeout: float | None) -> Asked:
    """Await ``awaitable`` for at most ``timeout`` seconds (``None``: without a bound); a late one is cancelled
    and left behind.

    ``asyncio.wait``, not ``wait_for``: ``wait_for`` waits for the cancelled awaitable to finish, and one that
    swallows its cancellation would hold the caller forever. A caller cancelled meanwhile cancels it too.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume_outcome)
        return None, NoAnswer(f"no answer within {timeout:g} s")
    return _outcome(task)


async def started(coroutine: Coroutine[Any, Any, Any], timeout: float | None) -> Asked:
    """Run ``coroutine`` (an async approver's) on the caller's loop for at most ``timeout`` seconds, as
    :func:`within` does, but started at once: an answer that needs no waiting costs no timer.

    Why a task of its own and not the caller's (``asyncio.timeout`` or ``wait_for`` around a plain await):
    at the timeout the approver must be *abandoned*, and a coroutine running in the caller's task cannot be
    left behind: one that swallows its cancellation would hold the call forever. Its own task is also what
    ``asyncio.timeout`` and anyio's cancel scopes (httpx) inside the approver bind to.

    Python 3.12+ starts the task eagerly: its first step runs inside this call, and an approver that answers
    without waiting is done before this returns (no loop turn). Before 3.12 the task's first step runs in the
    next loop turn, and this coroutine resumes right after it in that same turn. Either way, only an approver
    that is still waiting after its first step gets the timer and the wait of :func:`within`.
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        task = asyncio.Task(coroutine, loop=loop, eager_start=True)
    else:
        task = loop.create_task(coroutine)
        try:
            await asyncio.sleep(0)  # the task's first step runs just before this coroutine resumes
        except BaseException:  # the caller was cancelled meanwhile: so is the approver
            task.cancel()
            task.add_done_callback(_consume_outcome)
            raise
    if task.done():
        return _outcome(task)
    return await within(task, timeout)


def _outcome(task: asyncio.Future[Any]) -> Asked:
    if task.cancelled():  # it cancelled itself: no answer
        return None, asyncio.CancelledError()
    error = task.exception()
    return (task.result(), None) if error is None else (None, error)


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # A timed-out approver may still finish (or fail) later: read its outcome so asyncio does not log
    # "exception was never retrieved" for an answer nobody is waiting for.
    if not future.cancelled():
        future.exception()


class Workers:
    """Daemon threads reused across jobs (no thread is created per approval once warm).

    Each job gets a worker of its own: an idle one if there is one, else a new thread, so a hung approver
    holds only its own thread and never delays another call's. Idle workers wait for the next job; beyond
    ``max_idle`` they end. Daemon threads: a hung job never keeps the process from exiting.
    """

    def __init__(self, name: str, max_idle: int = 16) -> None:
        self._name = name
        self._max_idle = max_idle
        self._jobs: queue.SimpleQueue[_Job | tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._jobs = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """``fn(*args)`` on a worker, as a future (for awaiting with :func:`asyncio.wrap_future`)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._dispatch((future, fn, args))
        return future

    def call(self, timeout: float, fn: Callable[..., Any], *args: Any) -> Asked:
        """``fn(*args)`` on a worker, waited for at most ``timeout`` seconds (then abandoned: :class:`NoAnswer`).

        One lock handed over, not a Future (whose condition variable costs a third of a fast approval).
        """
        job = _Job(fn, args)
        self._dispatch(job)
        if not job.done.acquire(timeout=timeout):
            return None, NoAnswer(f"no answer within {timeout:g} s")
        if job.error is not None and not isinstance(job.error, Exception):
            raise job.error  # KeyboardInterrupt, SystemExit: not an answer
        return job.value, job.error

    def _dispatch(self, job: Any) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that worker is spoken for
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if not isinstance(job, _Job):
                future, fn, args = job
                job = _Job(fn, args, future)
            job.run()
            with self._lock:  # idle before the caller hears back, so the caller's next job finds this worker
                retire = self._idle >= self._max_idle
                if not retire:
                    self._idle += 1
            job.deliver()
            del job  # hold nothing of a finished job while idle
            if retire:
                return


class _Job:
    """One :meth:`Workers.call`: the worker runs it and releases ``done``; the caller waits on ``done``."""

    __slots__ = ("args", "done", "error", "fn", "future", "value")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], future: concurrent.futures.Future[Any] | None = None
    ) -> None:
        self.fn, self.args, self.future = fn, args, future
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def run(self) -> None:
        if self.future is not None and not self.future.set_running_or_notify_cancel():
            return  # cancelled before it started
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # handed to the waiter, whatever it is
            self.error = exc
        self.fn = self.args = None  # type: ignore[assignment]  # hold nothing once done

    def deliver(self) -> None:
        future = self.future
        if future is None:
            self.done.release()
        elif future.running():
            if self.error is None:
                future.set_result(self.value)
            else:
                future.set_exception(self.error)


WORKERS = Workers("mcp-guard-approver")


async def run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on a reused daemon worker and await its result (cancellable; a hung call is abandoned)."""
    return await asyncio.wrap_future(WORKERS.submit(fn, *args))


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """One long-lived event loop in a daemon thread, for sync callers of async approvers (made on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mcp-guard-approval-loop", daemon=True).start()
            _loop = loop
        return _loop


# -- built-in approvers -------------------------------------------------------------------------------


def auto_approve(request: ApprovalRequest) -> ApprovalDecision:
    """Approve everything. For tests and scripts only: it removes the human from the loop."""
    return ApprovalDecision.approve()


def auto_deny(request: ApprovalRequest) -> ApprovalDecision:
    """Deny everything, with a reason that says no human is available."""
    return ApprovalDecision.deny("approvals are disabled (auto_deny)")


def _printable(text: object) -> str:
    # Tool names and identities can come from a server or the model: escape control and format characters
    # (escape sequences, newlines, right-to-left overrides) so nothing can redraw the prompt, fake a line,
    # or hide part of what the human is approving. Each field is shown on one line.
    return "".join(
        ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )


def _open_terminal() -> tuple[TextIO | None, bool]:
    """The controlling terminal (opened by us: True), else stdin when it is a TTY (False), else None."""
    try:
        return open("/dev/tty", encoding="utf-8", errors="replace"), True  # the caller closes it
    except OSError:
        pass
    stdin = sys.stdin
    try:
        if stdin is not None and stdin.isatty():
            return stdin, False
    except (ValueError, OSError):  # a closed or detached stdin
        pass
    return None, False


def console_approver(
    request: ApprovalRequest, *, terminal: TextIO | None = None, output: TextIO | None = None
) -> ApprovalDecision:
    """Show the call on stderr and read y/n from the terminal (``/dev/tty``, else stdin when it is a TTY).

    With no terminal (a server, a CI job, a notebook kernel) it denies with a reason saying so, so an
    unattended run is never silently approved. Not for web or chat front-ends: give those an approver of
    their own (or use the framework's interrupt / ``needs_approval`` flow). ``terminal`` and ``output``
    replace the terminal and stderr (e.g. a pseudo-terminal in tests).
    """
    out = output if output is not None else sys.stderr
    opened = False
    if terminal is None:
        terminal, opened = _open_terminal()
    if terminal is None:
        return ApprovalDecision.deny("no terminal to ask a human for approval (console_approver); the call was denied")
    try:
        lines = [f"mcp-guard: approval needed for {_printable(request.tool)}"]
        for label, value in (
            ("server", request.server),
            ("identity", request.identity),
            ("session", request.session),
            ("rule", request.rule),
            ("reason", request.reason),
            ("about", request.description),
        ):
            if value is not None:
                lines.append(f"  {label + ':':<10}{_printable(value)}")
        arguments = json.dumps(request.args, indent=2, sort_keys=True, default=repr, ensure_ascii=True)
        lines.append(f"  {'arguments:':<10}" + arguments.replace("\n", "\n  "))
        out.write("\n".join(lines) + "\n")
        for _ in range(3):
            out.write("Approve this call? [y/N] ")
            out.flush()
            line = terminal.readline()
            if not line:
                return ApprovalDecision.deny("no answer at the console (end of input); the call was denied")
            answer = line.strip().lower()
            if answer in ("y", "yes"):
                return ApprovalDecision.approve()
            if answer in ("", "n", "no"):
                return ApprovalDecision.deny("a human declined this call at the console")
            out.write("Please answer y or n.\n")
        return ApprovalDecision.deny("no clear answer at the console; the call was denied")
    finally:
        if opened:
            terminal.close()
