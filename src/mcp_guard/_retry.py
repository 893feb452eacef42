"""Retries for transient upstream failures, with tenacity: exponential back-off with jitter, bounded.

Retried: connection errors and timeouts raised by the tool, exceptions that carry a ``retry_after``
(or an HTTP 429 status), and results that report a rate limit (an error result whose text mentions
429 / "rate limit", with a "retry after N" when it gives one). Not suitable for non-idempotent tools
whose failures may have taken effect: pass ``retry=False`` to the guard for those, or narrow ``retry_on``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

_RATE_TEXT = re.compile(r"\b429\b|rate[ _-]?limit|too many requests", re.IGNORECASE)
_RETRY_AFTER_TEXT = re.compile(r"retry[ _-]?after\D{0,12}?(\d+(?:\.\d+)?)", re.IGNORECASE)


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


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
    """How the guard retries a tool call that failed transiently. ``attempts`` counts the first call."""

    attempts: int = 3
    initial_s: float = 0.1
    max_s: float = 5.0
    jitter_s: float = 0.1
    max_total_s: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    is_error_result: Callable[[Any], bool] = field(
        default=lambda v: getattr(v, "isError", False) is True or getattr(v, "status", None) == "error"
    )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1 (1 means no retry)")

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.retry_on):
            return True
        if getattr(exc, "retry_after", None) is not None:
            return True
        return _status_of(exc) == 429

    def result_retry_after(self, value: Any) -> float | None:
        """Seconds to wait if ``value`` is an error result that reports a rate limit, else ``None``."""
        if not self.is_error_result(value):
            return None
        text = _text_of(value)
        if not _RATE_TEXT.search(text):
            return None
        match = _RETRY_AFTER_TEXT.search(text)
        return float(match.group(1)) if match else 0.0

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_exponential_jitter(initial=self.initial_s, max=self.max_s, jitter=self.jitter_s)

        def wait(rs: RetryCallState) -> float:
            hinted: float | None = None
            if rs.outcome is not None:
                if rs.outcome.failed:
                    exc = rs.outcome.exception()
                    raw = getattr(exc, "retry_after", None)
                    hinted = float(raw) if isinstance(raw, (int, float)) else None
                else:
                    hinted = self.result_retry_after(rs.outcome.result())
            base = backoff(rs)
            return min(max(base, hinted or 0.0), self.max_s)

        return wait

    def tenacity_kwargs(self) -> dict[str, Any]:
        """Arguments for ``Retrying``/``AsyncRetrying``: the last failure is re-raised (or its result returned)."""
        return {
            "retry": retry_if_exception(self.is_transient)
            | retry_if_result(lambda v: self.result_retry_after(v) is not None),
            "wait": self._wait(),
            "stop": stop_after_attempt(self.attempts) | stop_after_delay(self.max_total_s),
            "reraise": True,
            "retry_error_callback": _last_result,
        }


def _last_result(rs: RetryCallState) -> Any:
    # Result-based retries ran out: hand back the last (error) result rather than tenacity's RetryError.
    assert rs.outcome is not None
    return rs.outcome.result()
