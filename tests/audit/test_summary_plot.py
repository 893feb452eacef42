"""``mcp-guard audit --plot`` on short and long logs: the chart spans the events, and a missing extra fails first.

The demo's own log is 15 events in a few seconds; the first cut put them all in one 60-second bucket and let
matplotlib pick the x-axis, which ran from 2025 to 2029 around an empty chart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from mcp_guard._audit.summary import MAX_BUCKETS, PLOT_BARS, figure, plot_buckets, summarise
from mcp_guard._cli.main import main
from mcp_guard._install import install_hint
from tests.audit.test_summary import T0, event, write_log


def drawn(summary: Any) -> tuple[float, int, int]:
    """(x-axis span in seconds of the figure the plot saves, calls in its bars, bars with calls)."""
    fig = figure(summary)
    try:
        [ax] = fig.axes
        left, right = ax.get_xlim()  # matplotlib date units: days
    finally:
        plt.close(fig)
    _, buckets = plot_buckets(summary)
    calls = sum(sum(row) for row in buckets.values())
    return (right - left) * 86400.0, calls, sum(1 for row in buckets.values() if sum(row))


def test_fifteen_events_in_two_seconds_are_drawn_over_two_seconds(tmp_path: Path) -> None:
    events = [event(T0 + i * 0.14, "place_order", "denied" if i % 3 == 0 else None) for i in range(15)]
    summary = summarise(str(write_log(tmp_path / "demo.jsonl", events)))
    span, calls, bars = drawn(summary)
    assert 2.0 <= span <= 3.0  # the events' own span (plus the last bucket), not years
    assert calls == 15
    assert bars >= 10  # spread over the span, not one bucket
    width, _ = plot_buckets(summary)
    assert width <= 0.2


def test_a_single_event_still_has_a_bar(tmp_path: Path) -> None:
    summary = summarise(str(write_log(tmp_path / "one.jsonl", [event(T0, "a", None)])))
    span, calls, bars = drawn(summary)
    assert (calls, bars) == (1, 1)
    assert 0 < span <= 1.0


def test_a_year_of_events_is_merged_into_at_most_plot_bars(tmp_path: Path) -> None:
    events = [event(T0 + i * 3_600.0, "a", None) for i in range(24 * 365)]
    summary = summarise(str(write_log(tmp_path / "year.jsonl", events)))
    assert len(summary.buckets) <= MAX_BUCKETS
    width, buckets = plot_buckets(summary)
    assert max(buckets) - min(buckets) + 1 <= PLOT_BARS
    assert sum(sum(row) for row in buckets.values()) == 24 * 365
    span, _, _ = drawn(summary)
    assert 365 * 86400 <= span <= 365 * 86400 + 2 * width


def test_without_matplotlib_it_says_so_before_printing_anything(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_log(tmp_path / "log.jsonl", [event(T0 + i, "a", "denied") for i in range(5)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the 'plot' extra were not installed
    assert main(["audit", str(path), "--plot", str(tmp_path / "x.png")]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no tables first
    assert err.strip().splitlines() == [
        f"mcp-guard: mcp-guard audit --plot requires the 'plot' extra: {install_hint('plot')} "
        "(missing module 'matplotlib')"
    ]
    assert not (tmp_path / "x.png").exists()
