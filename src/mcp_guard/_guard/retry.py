"""Retries for transient upstream failures, decided by tenacity: exponential back-off with jitter, bounded.

Retried: connection errors and timeouts raised by the tool, exceptions that carry a ``retry_after``
(or an HTTP 429 status), and results that report a rate limit (an error result whose text mentions
429 / "rate limit", with a "retry after N" when it gives one).

Retries never spend twice (spec section 8): by default only tools that declare themselves safe to repeat
are retried (MCP annotations ``readOnlyHint`` or ``idempotentHint``, or ``retry: true`` on the rule); a
timeout from a tool that moves money may come after the money moved. ``RetryPolicy(idempotent_only=False)``
retries every tool (0.1's behaviour) and ``retry: false`` on a rule turns retries off for it. Each retry is
charged to the call's limits again, so N executions never exceed a spend cap.

The engine is tenacity's: a :class:`RetryPolicy` is turned once into a ``tenacity.Retrying`` (its waits,
stops and retry predicates), and the guard's retry loop asks it ``iter(retry_state)`` after each failed
attempt, as tenacity's own drivers do. The guard performs the answer itself (the ``Sleep`` step, through
its injected ``sleep``/``asleep``, then the next ``Call``), so every attempt is charged, cancelled and
audited by the guard; the retrying object never sleeps or calls anything.
"""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from tenacity import (
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from mcp_guard._compat import result_is_error

_RATE_TEXT = re.compile(r"\b429\b|rate[ _-]?limit|too many requests", re.IGNORECASE)
_POLICY_VIOLATION = '"error": "policy_violation"'
_RETRY_AFTER_TEXT = re.compile(r"retry[ _-]?after\D{0,12}?(\d+(?:\.\d+)?)", re.IGNORECASE)

# wait_exponential_jitter's first wait is ``initial`` up to tenacity 9.1 and ``multiplier`` from 9.2, which
# deprecates ``initial`` (a DeprecationWarning per RetryPolicy): use whichever this tenacity has.
_FIRST_WAIT = "multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter).parameters else "initial"


def _status_of(exc: BaseException) -> int | None:
    # httpx/requests/openai put it on .status_code or .response.status_code; aiohttp on .status.
    for status in (
        getattr(exc, "status_code", None),
        getattr(getattr(exc, "response", None), "status_code", None),
        getattr(exc, "status", None),
    ):
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _retry_after_of(exc: BaseException | None) -> float | None:
    raw = getattr(exc, "retry_after", None)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    return None


def _text_of(value: Any) -> str:
    content = getattr(value, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [getattr(c, "text", None) or (c.get("text") if isinstance(c, dict) else None) for c in content]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


@dataclass(frozen=True)
class RetryPolicy:
    """How the guard retries a tool call that failed transiently. ``attempts`` counts the first call.

    Waits grow exponentially from ``initial_s`` (capped at ``max_s``) with up to ``jitter_s`` of random
    jitter, or follow the failure's own retry-after when it is longer. Retrying stops after ``attempts``
    calls, or before a wait that would bring the total time slept to ``max_total_s``. Each attempt is charged
    to the call's limits again (spec section 8); retrying stops when the budget is gone.
    """

    attempts: int = 3
    initial_s: float = 0.1
    max_s: float = 5.0
    jitter_s: float = 0.1
    max_total_s: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    is_error_result: Callable[[Any], bool] = field(default=result_is_error)
    idempotent_only: bool = True
    """Retry only tools that declare themselves safe to repeat (annotations ``readOnlyHint`` /
    ``idempotentHint``, or ``retry: true`` on the rule). False retries every tool, as 0.1 did."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1 (1 means no retry)")
        if not (self.initial_s >= 0 and self.max_s >= 0 and self.jitter_s >= 0 and self.max_total_s >= 0):
            raise ValueError("RetryPolicy times must be >= 0")

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.retry_on):
            return True
        if _retry_after_of(exc) is not None:
            return True
        return _status_of(exc) == 429

    def result_retry_after(self, value: Any) -> float | None:
        """Seconds to wait if ``value`` is an error result that reports a rate limit, else ``None``."""
        if not self.is_error_result(value):
            return None
        text = _text_of(value)
        # Another guard's refusal (say, a stacked adapter's rate_limited violation) is a policy answer, not an
        # upstream failure: retrying it would only ask that guard again, charging its budget each time.
        if _POLICY_VIOLATION in text or not _RATE_TEXT.search(text):
            return None
        match = _RETRY_AFTER_TEXT.search(text)
        return float(match.group(1)) if match else 0.0

    def _reports_rate_limit(self, value: Any) -> bool:
        return self.result_retry_after(value) is not None

    @cached_property
    def _retrying(self) -> Retrying:
        """The tenacity engine this policy describes, built once (on the first failure that asks it).

        Only asked (:func:`next_sleep`), never run: its ``sleep`` is never called, the guard sleeps.
        """
        backoff = wait_exponential_jitter(max=self.max_s, jitter=self.jitter_s, **{_FIRST_WAIT: self.initial_s})
        return Retrying(
            retry=retry_if_exception(self.is_transient) | retry_if_result(self._reports_rate_limit),
            wait=wait_retry_after(self, backoff),
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.max_total_s),
            reraise=True,
            retry_error_callback=_last_outcome,
        )

    def retry_state(self) -> RetryCallState:
        """A retry state for one call (made at its first failed attempt: a call that succeeds needs none)."""
        retrying = self._retrying
        retrying.begin()  # tenacity's statistics (per thread) are counted from here
        return SleptTimeState(retrying)


class wait_retry_after(wait_base):  # named as tenacity names its waits
    """The failure's own retry-after when it gives one and it is longer than ``backoff``'s wait.

    A server's retry-after is honoured, not cut short (retrying early only fails again); when it is longer
    than the time left, ``stop_before_delay`` gives up instead.
    """

    def __init__(self, policy: RetryPolicy, backoff: wait_base) -> None:
        self.policy = policy
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.backoff(retry_state)
        outcome = retry_state.outcome
        if outcome is None:
            return wait
        if outcome.failed:
            hinted = _retry_after_of(outcome.exception())
        else:
            hinted = self.policy.result_retry_after(outcome.result())
        return max(wait, hinted or 0.0)


class SleptTimeState(RetryCallState):
    """tenacity's retry state on a clock that only the guard's sleeps move: the time since the first attempt is
    the time slept between attempts.

    So ``stop_before_delay(max_total_s)`` bounds the time slept (what ``max_total_s`` means, whatever the tool
    calls take), and a test that injects a sleep which does not sleep drives the clock with it.
    """

    def __init__(self, retrying: Retrying) -> None:
        super().__init__(retrying, None, (), {})

    @property
    def seconds_since_start(self) -> float | None:
        return None if self.outcome is None else self.idle_for


def next_sleep(retry_state: RetryCallState) -> float | None:
    """Ask the state's retrying object what follows the outcome just set on ``retry_state`` (``iter``).

    ``DoSleep``: returns the seconds to sleep, and the state is made ready for the next attempt (as
    tenacity's own drivers do before they sleep). Anything else means stop, the outcome stands: ``None``.
    """
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None and outcome.failed else None
    traceback = error.__traceback__ if error is not None else None
    try:
        action = retry_state.retry_object.iter(retry_state)
    except BaseException as exc:
        if exc is not error:
            raise
        # tenacity answers "no retry" by raising the outcome's exception again: the caller raises it, with
        # the traceback it had (not tenacity's frames).
        exc.with_traceback(traceback)
        return None
    if isinstance(action, DoSleep):
        retry_state.prepare_for_next_attempt()
        return float(action)
    return None


# Exceptions that mean the request never reached the tool: the connection was refused or could not be
# made. Read by class name too, so httpx/httpcore/aiohttp/anyio connect errors count without importing them.
_NOT_SENT_NAMES = frozenset({"ConnectError", "ConnectTimeout", "ClientConnectorError", "ConnectionRefusedError"})


def not_sent(exc: BaseException) -> bool:
    """True when ``exc`` shows the call never reached the tool (refused or failed connect), so it did not run.

    Everything else a tool call raises (a timeout, a connection lost mid-call, an error from inside the
    tool, a cancellation) is ambiguous: the tool may have acted, and its quota is kept.
    """
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return True
    return any(cls.__name__ in _NOT_SENT_NAMES for cls in type(exc).__mro__)


def _last_outcome(rs: RetryCallState) -> Any:
    # Retries ran out: hand back the last outcome (an error result is returned, an exception raised) rather
    # than tenacity's RetryError.
    assert rs.outcome is not None
    return rs.outcome.result()
