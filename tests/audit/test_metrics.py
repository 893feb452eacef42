"""OpenTelemetry metrics read back through the SDK's in-memory reader match the audit log, call for call."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mcp_guard import Guard, MemorySink
from mcp_guard._audit.metrics import ATTRIBUTES, DECISIONS, DURATION, MetricsSink
from mcp_guard.integrations.langchain import wrap_tools
from tests.support.clock import FakeClock
from tests.support.langchain_helpers import call, script, tool_messages

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "lookup": {"rate_limit": "2/minute"},
        "trade": {"mode": "shadow", "deny_if": {"args.amount": {"gt": 100}}},
    },
}


@tool
def lookup(symbol: str) -> str:
    """Look a symbol up."""
    return f"{symbol}: 1"


@tool
def trade(symbol: str, amount: int) -> str:
    """Trade an amount of a symbol."""
    return f"traded {amount} {symbol}"


@tool
def transfer(to: str) -> str:
    """Move money out."""
    return f"sent to {to}"


def read_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "mcp_guard"
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_metrics_after_a_scripted_agent_run_match_the_audit_log() -> None:
    reader = InMemoryMetricReader()
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink, metrics=MeterProvider(metric_readers=[reader]), clock=FakeClock())
    tools = wrap_tools([lookup, trade, transfer], guard, hide_denied=False, server="desk")
    model = script(
        call("lookup", {"symbol": "BTC"}, "c1"),
        call("lookup", {"symbol": "ETH"}, "c2"),
        call("lookup", {"symbol": "SOL"}, "c3"),
        call("trade", {"symbol": "BTC", "amount": 5}, "c4"),
        call("trade", {"symbol": "BTC", "amount": 500}, "c5"),
        call("transfer", {"to": "mallory"}, "c6"),
    )
    state = create_agent(model, tools).invoke({"messages": [("user", "go")]}, context={"user_id": "alice"})
    assert len(tool_messages(state["messages"])) == 6

    events = [e for e in sink.events if "event" not in e]
    expected = Counter(
        (e["tool"], e["server"] or "", e["code"] or "allow", "shadow" if e.get("shadow") else "enforce") for e in events
    )
    assert expected == {
        ("lookup", "desk", "allow", "enforce"): 2,
        ("lookup", "desk", "rate_limited", "enforce"): 1,
        ("trade", "desk", "allow", "shadow"): 1,
        ("trade", "desk", "denied", "shadow"): 1,
        ("transfer", "desk", "default_deny", "enforce"): 1,
    }

    points = read_points(reader)
    counted = Counter()
    for p in points[DECISIONS]:
        assert set(p.attributes) == set(ATTRIBUTES)  # never identity, session or argument values
        counted[tuple(p.attributes[a] for a in ATTRIBUTES)] += p.value
    assert counted == expected
    timed = Counter()
    for p in points[DURATION]:
        assert set(p.attributes) == set(ATTRIBUTES)
        timed[tuple(p.attributes[a] for a in ATTRIBUTES)] += p.count
    assert timed == expected
    assert sum(p.sum for p in points[DURATION]) == pytest.approx(sum(e["latency_ms"] for e in events), rel=1e-6)


def test_reload_events_are_not_counted_as_calls() -> None:
    reader = InMemoryMetricReader()
    guard = Guard(POLICY, audit=MemorySink(), metrics=MeterProvider(metric_readers=[reader]))
    guard.reload({**POLICY, "default": "allow"})
    guard.invoke("anything", {}, lambda: "ok")
    (point,) = read_points(reader)[DECISIONS]
    assert point.value == 1


def test_metrics_true_uses_the_global_provider_and_a_sink_can_be_shared() -> None:
    reader = InMemoryMetricReader()
    shared = MetricsSink(MeterProvider(metric_readers=[reader]))
    for _ in range(2):
        Guard(POLICY, metrics=shared).invoke("lookup", {"symbol": "X"}, lambda symbol: symbol)
    (point,) = read_points(reader)[DECISIONS]
    assert point.value == 2
    assert Guard(POLICY, metrics=True).invoke("lookup", {"symbol": "X"}, lambda symbol: symbol) == "X"
