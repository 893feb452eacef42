"""OpenTelemetry metrics (extra ``otel``): a counter of decisions and a histogram of guarded-call latency.

``Guard(metrics=True)`` records through the global meter provider; ``Guard(metrics=provider)`` through the
one given (e.g. an SDK ``MeterProvider`` with an ``InMemoryMetricReader`` in tests). The instruments:

- ``mcp_guard.decisions`` (counter, ``{call}``): one per guarded call;
- ``mcp_guard.guard.duration`` (histogram, ``ms``): from the start of the guard's decision to the audit
  event, so it includes the tool's own run time for calls that were admitted.

Attributes, the same on both: ``tool``, ``server`` (``""`` when unknown), ``code`` (the refusal code, or
``"allow"``; in shadow mode the would-be code) and ``mode`` (``"enforce"`` or ``"shadow"``). Never an
identity, a session or an argument value: those are unbounded (a metrics backend keeps one series per
distinct set of attributes) and may be personal data; they belong in the audit log.

The recorder is an audit sink the guard adds to its own (so it is fed in the one place where the event of a
call is finished); it reads only the fields above, and ignores non-call events such as policy reloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_guard._errors import require_extra

DECISIONS = "mcp_guard.decisions"
DURATION = "mcp_guard.guard.duration"
ATTRIBUTES = ("tool", "server", "code", "mode")


class MetricsSink:
    """Turns each call's audit event into one counter increment and one latency sample."""

    def __init__(self, meter_provider: Any = None) -> None:
        metrics = require_extra("opentelemetry.metrics", "otel", "Guard(metrics=...)")
        from mcp_guard._version import __version__

        meter = metrics.get_meter("mcp_guard", __version__, meter_provider=meter_provider)
        self._decisions = meter.create_counter(DECISIONS, unit="{call}", description="tool calls decided by the guard")
        self._duration = meter.create_histogram(
            DURATION, unit="ms", description="time from the guard's decision to the end of the guarded call"
        )

    def write(self, event: Mapping[str, Any]) -> None:
        if "event" in event:  # a policy reload, not a call
            return
        attributes = {
            "tool": str(event.get("tool") or ""),
            "server": str(event.get("server") or ""),
            "code": str(event.get("code") or "allow"),
            "mode": "shadow" if event.get("shadow") else "enforce",
        }
        self._decisions.add(1, attributes)
        latency = event.get("latency_ms")
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            self._duration.record(float(latency), attributes)


def metrics_sink(spec: Any) -> MetricsSink:
    """``True`` -> the global meter provider; a provider -> that one; a ready :class:`MetricsSink` as is."""
    if isinstance(spec, MetricsSink):
        return spec
    return MetricsSink(None if spec is True else spec)


__all__ = ["ATTRIBUTES", "DECISIONS", "DURATION", "MetricsSink", "metrics_sink"]
