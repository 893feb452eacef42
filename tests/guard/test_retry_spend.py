"""Retries never spend twice (spec 0.2 section 8): a money-moving tool that times out after acting never runs
more than the spend cap allows; read-only tools are still retried; ``retry`` on a rule forces it on or off;
error results (both mcp spellings) give their quota back. The tool records its own executions: it is the judge.
"""

from __future__ import annotations

from typing import Any

import pytest

from mcp_guard import Guard, MemorySink, Policy, RetryPolicy

CAP = 10_000


def _policy(retry: bool | None = None) -> Policy:
    transfer: dict[str, Any] = {
        "limits": [{"counter": "spend", "window": "day", "max": CAP, "scope": "identity", "cost": "args.amount"}]
    }
    if retry is not None:
        transfer["retry"] = retry
    return Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "transfer": transfer,
                "quote": {"limits": [{"counter": "q", "window": "minute", "max": 100, "scope": "global"}]},
                "quote_never": {"retry": False},
            },
        }
    )


class Bank:
    """Moves the money, then times out before answering (the ambiguous failure)."""

    def __init__(self) -> None:
        self.moved: list[int] = []

    def transfer(self, amount: int) -> str:
        self.moved.append(amount)
        raise TimeoutError("read timed out after the transfer was booked")

    async def atransfer(self, amount: int) -> str:
        return self.transfer(amount)


def _no_sleep(_: float) -> None:
    return None


async def _ano_sleep(_: float) -> None:
    return None


async def _call(guard: Guard, path: str, bank: Bank, amount: int, **kw: Any) -> Any:
    if path == "invoke":
        return guard.invoke("transfer", {"amount": amount}, bank.transfer, identity="mallory", **kw)
    return await guard.ainvoke("transfer", {"amount": amount}, bank.atransfer, identity="mallory", **kw)


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
@pytest.mark.parametrize(
    ("retry_rule", "guard_retry"),
    [
        (None, None),  # the default: not declared safe, so run once
        (True, None),  # the rule forces retries: every attempt is charged
        (None, RetryPolicy(attempts=5, idempotent_only=False)),  # 0.1's retry-everything, charged per attempt
    ],
    ids=["default", "rule_retry_true", "retry_everything"],
)
async def test_a_transfer_that_times_out_after_acting_never_exceeds_the_cap(
    path: str, retry_rule: bool | None, guard_retry: RetryPolicy | None
) -> None:
    bank = Bank()
    sink = MemorySink()
    guard = Guard(_policy(retry_rule), retry=guard_retry, sleep=_no_sleep, asleep=_ano_sleep, audit=sink)
    timeouts = 0
    for _ in range(6):  # the model tries again and again after each timeout
        try:
            result = await _call(guard, path, bank, 5_000)
        except TimeoutError:
            timeouts += 1
            continue
        assert result["code"] == "rate_limited"
    assert sum(bank.moved) <= CAP
    assert len(bank.moved) == 2  # 2 x 5,000 fill the cap; nothing more ran
    # Run once, each model call is one execution; retried, one model call made both (its retry was charged).
    assert timeouts == (2 if retry_rule is None and guard_retry is None else 1)
    assert [e["outcome"] for e in sink.events].count("denied") == 6 - timeouts


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_the_default_runs_a_tool_not_declared_safe_once(path: str) -> None:
    bank = Bank()
    guard = Guard(_policy(), sleep=_no_sleep, asleep=_ano_sleep)
    with pytest.raises(TimeoutError):
        await _call(guard, path, bank, 1)
    with pytest.raises(TimeoutError):  # annotations that do not say "safe to repeat" change nothing
        await _call(guard, path, bank, 1, annotations={"destructiveHint": True, "readOnlyHint": False})
    assert bank.moved == [1, 1]


class Quotes:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    def __call__(self, **_: Any) -> str:
        self.runs += 1
        if self.runs <= self.failures:
            raise ConnectionResetError("connection reset")
        return "42.0"

    async def acall(self, **kw: Any) -> str:
        return self(**kw)


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
@pytest.mark.parametrize("hint", ["readOnlyHint", "idempotentHint"])
async def test_a_tool_declared_safe_to_repeat_is_still_retried_and_each_attempt_charged(path: str, hint: str) -> None:
    quotes = Quotes(failures=2)
    guard = Guard(_policy(), sleep=_no_sleep, asleep=_ano_sleep)
    if path == "invoke":
        assert guard.invoke("quote", {}, quotes, annotations={hint: True}) == "42.0"
    else:
        assert await guard.ainvoke("quote", {}, quotes.acall, annotations={hint: True}) == "42.0"
    assert quotes.runs == 3
    # three attempts, three units of the 100 charged
    left = [guard.admit("quote", {}) for _ in range(100)]
    assert sum(a.admitted for a in left) == 97


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_retry_false_on_the_rule_wins_over_the_annotations(path: str) -> None:
    quotes = Quotes(failures=1)
    guard = Guard(_policy(), sleep=_no_sleep, asleep=_ano_sleep)
    if path == "invoke":
        with pytest.raises(ConnectionResetError):
            guard.invoke("quote_never", {}, quotes, annotations={"readOnlyHint": True})
    else:
        with pytest.raises(ConnectionResetError):
            await guard.ainvoke("quote_never", {}, quotes.acall, annotations={"readOnlyHint": True})
    assert quotes.runs == 1


class Mcp2ErrorResult:
    """mcp 2's spelling of a failed CallToolResult (``is_error``)."""

    is_error = True
    content = ()


class Mcp1ErrorResult:
    isError = True
    content = ()


@pytest.mark.parametrize("result", [Mcp2ErrorResult(), Mcp1ErrorResult()], ids=["mcp2", "mcp1"])
@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_an_error_result_is_audited_as_error_and_gives_its_quota_back(result: Any, path: str) -> None:
    sink = MemorySink()
    guard = Guard(_policy(), audit=sink)
    runs: list[int] = []

    def failing(amount: int) -> Any:
        runs.append(amount)
        return result

    async def afailing(amount: int) -> Any:
        return failing(amount)

    for _ in range(4):
        if path == "invoke":
            assert guard.invoke("transfer", {"amount": CAP}, failing) is result
        else:
            assert await guard.ainvoke("transfer", {"amount": CAP}, afailing) is result
    assert len(runs) == 4  # each failure gave the whole cap back
    assert [e["outcome"] for e in sink.events] == ["error"] * 4


def test_retry_field_must_be_a_boolean() -> None:
    from mcp_guard import PolicyError

    with pytest.raises(PolicyError, match="retry"):
        Policy.from_dict({"version": "1", "default": "deny", "tools": {"t": {"retry": "yes"}}})
