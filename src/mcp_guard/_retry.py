"""Retries for transient upstream failures: exponential back-off with jitter, bounded.

Retried: connection errors and timeouts raised by the tool, exceptions that carry a ``retry_after``
(or an HTTP 429 status), and results that report a rate limit (an error result whose text mentions
429 / "rate limit", with a "retry after N" when it gives one).

Retries never spend twice (spec section 8): by default only tools that declare themselves safe to repeat
are retried (MCP annotations ``readOnlyHint`` or ``idempotentHint``, or ``retry: true`` on the rule); a
timeout from a tool that moves money may come after the money moved. ``RetryPolicy(idempotent_only=False)``
retries every tool (0.1's behaviour) and ``retry: false`` on a rule turns retries off for it. Each retry is
charged to the call's limits again, so N executions never exceed a spend cap.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    retry_if_exception,
    retry_if_result,
)

from mcp_guard._compat import result_is_error

_RATE_TEXT = re.compile(r"\b429\b|rate[ _-]?limit|too many requests", re.IGNORECASE)
_POLICY_VIOLATION = '"error": "policy_violation"'
_RETRY_AFTER_TEXT = re.compile(r"retry[ _-]?after\D{0,12}?(\d+(?:\.\d+)?)", re.IGNORECASE)


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
    calls, or before a wait that would take the total time slept past ``max_total_s``. All attempts run
    under the one rate-limit reservation the call was admitted with.
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

    def next_wait(self, attempt: int, slept: float, error: BaseException | None, value: Any = None) -> float | None:
        """Seconds to sleep before attempt ``attempt + 1``, or ``None`` to stop (not transient, or out of budget).

        ``error`` is what attempt ``attempt`` raised (``None``: it returned ``value``); ``slept`` is the time
        already slept between attempts. The guard's retry loop calls this; :meth:`tenacity_kwargs` is the
        same rule for tenacity users.
        """
        if error is not None:
            if not self.is_transient(error):
                return None
            hinted = _retry_after_of(error)
        else:
            hinted = self.result_retry_after(value)
            if hinted is None:
                return None
        if attempt >= self.attempts:
            return None
        exponent = min(attempt - 1, 64)
        wait = max(min(self.initial_s * 2.0**exponent + random.uniform(0.0, self.jitter_s), self.max_s), hinted or 0.0)
        if slept + wait > self.max_total_s:
            return None
        return wait

    def _wait(self) -> Callable[[RetryCallState], float]:
        initial, cap, jitter = self.initial_s, self.max_s, self.jitter_s

        def wait(rs: RetryCallState) -> float:
            # Exponential from initial_s with up to jitter_s of random jitter, capped at max_s (tenacity's
            # wait_exponential_jitter, written out: its ``initial`` argument is deprecated in tenacity 9.2
            # and its replacement does not exist in the 8.x we support).
            exponent = min(rs.attempt_number - 1, 64)  # no float overflow for absurd attempt counts
            backoff = min(initial * 2.0**exponent + random.uniform(0.0, jitter), cap)
            hinted: float | None = None
            if rs.outcome is not None:
                if rs.outcome.failed:
                    hinted = _retry_after_of(rs.outcome.exception())
                else:
                    hinted = self.result_retry_after(rs.outcome.result())
            # A server's retry-after is honoured, not cut short (retrying early only fails again); when it
            # is longer than the time left, the stop below gives up instead.
            return max(backoff, hinted or 0.0)

        return wait

    def _stop(self) -> Callable[[RetryCallState], bool]:
        attempts, total = self.attempts, self.max_total_s

        def stop(rs: RetryCallState) -> bool:
            # tenacity computes the next wait before asking whether to stop; counting the time slept (not
            # the wall clock) keeps the bound exact and lets tests inject a sleep that does not sleep.
            return rs.attempt_number >= attempts or rs.idle_for + rs.upcoming_sleep > total

        return stop

    def tenacity_kwargs(self) -> dict[str, Any]:
        """Arguments for ``Retrying``/``AsyncRetrying``: the last failure is re-raised (or its result returned)."""
        return {
            "retry": retry_if_exception(self.is_transient)
            | retry_if_result(lambda v: self.result_retry_after(v) is not None),
            "wait": self._wait(),
            "stop": self._stop(),
            "reraise": True,
            "retry_error_callback": _last_result,
        }


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


def _last_result(rs: RetryCallState) -> Any:
    # Result-based retries ran out: hand back the last (error) result rather than tenacity's RetryError.
    assert rs.outcome is not None
    return rs.outcome.result()
