"""Retrying transient upstream failures: exponential back-off with jitter, bounded by attempts and time slept.

Sleeps are injected and recorded; nothing sleeps for real. The tools here declare themselves safe to repeat
(``readOnlyHint``), the only ones retried by default (spec 0.2 section 8; ``tests/guard/test_retry_spend.py`` covers the
rest).
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp.types import CallToolResult, TextContent

from mcp_guard import Decision, Guard, MemorySink, Policy, RetryPolicy

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "fetch": {},
            "once": {"limits": [{"counter": "once", "window": "minute", "max": 1, "scope": "global"}]},
        },
    }
)

PATHS = ["invoke", "ainvoke"]


class Upstream:
    """A tool whose first ``failures`` calls fail with ``failure`` (raised, or returned if not an exception)."""

    def __init__(self, failure: Any, failures: int = 10**9, result: Any = "fresh data") -> None:
        self.failure = failure
        self.failures = failures
        self.result = result
        self.attempts = 0

    def __call__(self, **_: Any) -> Any:
        self.attempts += 1
        if self.attempts <= self.failures:
            if isinstance(self.failure, BaseException):
                raise self.failure
            return self.failure
        return self.result

    async def acall(self, **kwargs: Any) -> Any:
        return self(**kwargs)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


def _guard(sleeps: Sleeps, retry: RetryPolicy | bool | None = None, **options: Any) -> Guard:
    return Guard(POLICY, retry=retry, sleep=sleeps, asleep=sleeps.asleep, **options)


SAFE = {"readOnlyHint": True}


async def _call(guard: Guard, path: str, tool: Upstream, name: str = "fetch") -> Any:
    if path == "invoke":
        return guard.invoke(name, {}, tool, annotations=SAFE)
    return await guard.ainvoke(name, {}, tool.acall, annotations=SAFE)


class RateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("slow down")
        self.retry_after = retry_after


class HTTPError(Exception):
    def __init__(self, status: int, *, on_response: bool = False) -> None:
        super().__init__(f"HTTP {status}")
        if on_response:
            self.response = type("Response", (), {"status_code": status})()
        else:
            self.status_code = status


def _error_result(text: str) -> CallToolResult:
    return CallToolResult(isError=True, content=[TextContent(type="text", text=text)])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "failure",
    [
        ConnectionError("reset"),
        TimeoutError("read timed out"),
        RateLimitedError(0.5),
        HTTPError(429),
        HTTPError(429, on_response=True),
    ],
    ids=["connection", "timeout", "retry_after", "status_429", "response_429"],
)
async def test_transient_failures_are_retried(path: str, failure: BaseException) -> None:
    sleeps = Sleeps()
    tool = Upstream(failure, failures=2)
    assert await _call(_guard(sleeps), path, tool) == "fresh data"
    assert tool.attempts == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("path", PATHS)
async def test_retries_stop_after_the_attempts_and_reraise(path: str) -> None:
    sleeps = Sleeps()
    tool = Upstream(ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down"):
        await _call(_guard(sleeps, RetryPolicy(attempts=4)), path, tool)
    assert tool.attempts == 4
    assert len(sleeps) == 3


@pytest.mark.parametrize("path", PATHS)
async def test_backoff_is_exponential_with_bounded_jitter(path: str) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=6, initial_s=0.1, max_s=0.5, jitter_s=0.05, max_total_s=100)
    with pytest.raises(ConnectionError):
        await _call(_guard(sleeps, policy), path, Upstream(ConnectionError()))
    floors = [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(sleeps) == len(floors)
    for slept, floor in zip(sleeps, floors, strict=True):
        assert floor <= slept <= min(floor + 0.05, 0.5) + 1e-9


@pytest.mark.parametrize("path", PATHS)
async def test_retries_stop_before_the_total_wait_passes_max_total(path: str) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=100, initial_s=1, max_s=1, jitter_s=0, max_total_s=3.5)
    tool = Upstream(TimeoutError())
    with pytest.raises(TimeoutError):
        await _call(_guard(sleeps, policy), path, tool)
    assert sleeps == [1, 1, 1]  # a fourth second would pass 3.5 s
    assert tool.attempts == 4


@pytest.mark.parametrize("path", PATHS)
async def test_a_servers_retry_after_is_honoured_or_the_retry_given_up(path: str) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, initial_s=0.1, max_s=0.2, jitter_s=0, max_total_s=10)
    tool = Upstream(RateLimitedError(4.0), failures=1)
    assert await _call(_guard(sleeps, policy), path, tool) == "fresh data"
    assert sleeps == [4.0]  # longer than max_s, but retrying earlier would only fail again
    sleeps.clear()
    too_long = Upstream(RateLimitedError(60.0), failures=1)
    with pytest.raises(RateLimitedError):
        await _call(_guard(sleeps, policy), path, too_long)
    assert sleeps == []
    assert too_long.attempts == 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("failure", [ValueError("bad input"), HTTPError(500), HTTPError(404, on_response=True)])
async def test_other_failures_are_not_retried(path: str, failure: BaseException) -> None:
    sleeps = Sleeps()
    tool = Upstream(failure)
    with pytest.raises(type(failure)):
        await _call(_guard(sleeps), path, tool)
    assert tool.attempts == 1
    assert sleeps == []


@pytest.mark.parametrize("path", PATHS)
async def test_error_results_reporting_a_rate_limit_are_retried_with_their_retry_after(path: str) -> None:
    sleeps = Sleeps()
    tool = Upstream(_error_result("HTTP 429 Too Many Requests; retry after 2.5 seconds"), failures=1)
    assert await _call(_guard(sleeps), path, tool) == "fresh data"
    assert tool.attempts == 2
    assert sleeps == [2.5]


@pytest.mark.parametrize("path", PATHS)
async def test_error_results_that_stay_rate_limited_come_back_after_the_last_attempt(path: str) -> None:
    sleeps = Sleeps()
    limited = _error_result("rate limit exceeded")
    tool = Upstream(limited)
    assert await _call(_guard(sleeps, RetryPolicy(attempts=3)), path, tool) is limited
    assert tool.attempts == 3


@pytest.mark.parametrize("path", PATHS)
async def test_other_error_results_are_not_retried(path: str) -> None:
    sleeps = Sleeps()
    failed = _error_result("no such file")
    tool = Upstream(failed)
    assert await _call(_guard(sleeps), path, tool) is failed
    assert tool.attempts == 1
    assert sleeps == []


@pytest.mark.parametrize("path", PATHS)
async def test_another_guards_rate_limited_refusal_is_not_retried(path: str) -> None:
    # A stacked guard's violation mentions "rate_limited" and a retry_after_s: it is an answer, not an outage.
    inner = Decision.deny("fetch", "rate_limited", reason="fetch is limited to 1 calls per minute", retry_after_s=12)
    refused = _error_result(inner.to_json())
    sleeps = Sleeps()
    tool = Upstream(refused)
    assert await _call(_guard(sleeps), path, tool) is refused
    assert tool.attempts == 1
    assert sleeps == []


@pytest.mark.parametrize("path", PATHS)
async def test_retry_false_disables_retries(path: str) -> None:
    sleeps = Sleeps()
    tool = Upstream(ConnectionError())
    with pytest.raises(ConnectionError):
        await _call(_guard(sleeps, retry=False), path, tool)
    assert tool.attempts == 1


@pytest.mark.parametrize("path", PATHS)
async def test_every_attempt_is_charged_and_retries_stop_when_the_budget_is_gone(path: str) -> None:
    # Spec 0.2 (was: "one reservation covers a call and its retries"): a retry reserves again; with max 1
    # the first attempt took the budget, so an ambiguous failure is not retried.
    sleeps = Sleeps()
    sink = MemorySink()
    guard = _guard(sleeps, audit=sink)
    tool = Upstream(ConnectionError(), failures=2)
    with pytest.raises(ConnectionError):
        await _call(guard, path, tool, name="once")
    assert tool.attempts == 1
    assert (await _call(guard, path, Upstream(None, failures=0), name="once"))["code"] == "rate_limited"
    assert [e["outcome"] for e in sink.events] == ["error", "denied"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_never_sent_gives_each_attempts_quota_back(path: str) -> None:
    # A refused connection never reached the tool: each attempt's charge comes back, so the retries fit
    # under max 1 and the budget is whole afterwards.
    sleeps = Sleeps()
    guard = _guard(sleeps)
    tool = Upstream(ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        await _call(guard, path, tool, name="once")
    assert tool.attempts == 3
    assert await _call(guard, path, Upstream(None, failures=0), name="once") == "fresh data"


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_that_fails_ambiguously_keeps_its_charge(path: str) -> None:
    # Spec 0.2 (was: "fails after all retries gives its quota back"): a reset connection may have reached
    # the tool.
    sleeps = Sleeps()
    guard = _guard(sleeps)
    with pytest.raises(ConnectionError):
        await _call(guard, path, Upstream(ConnectionError()), name="once")
    assert (await _call(guard, path, Upstream(None, failures=0), name="once"))["code"] == "rate_limited"


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"initial_s": -1}, {"max_total_s": float("nan")}])
def test_retry_policy_refuses_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)
