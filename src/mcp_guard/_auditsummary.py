"""Audit at a glance (``mcp-guard audit FILE``): stream a JSONL audit log into counters, print tables, plot.

Memory stays flat with the size of the log: each line is parsed, counted and dropped; what is kept grows
only with the number of distinct tools, codes and callers, and with the time buckets of the plot (whose width
doubles whenever there would be more than :data:`MAX_BUCKETS`). A torn or non-JSON line (a writer killed
mid-line, a log rotated under the reader) is counted and skipped, never fatal.

``time`` may be an epoch number (0.1) or an ISO-8601 string (0.2); both are read.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from mcp_guard._errors import require_extra

MAX_BUCKETS = 2_000
# Bucket widths, finest first: the summary starts at the first and moves up whenever it would hold more than
# MAX_BUCKETS buckets. Each width is a whole multiple of the one before, so merging is exact (a bucket's
# index divided by the ratio); past the last, widths double. Starting fine matters: a demo's log spans two
# seconds, and one 60-second bucket drew an empty chart.
_WIDTHS_S: tuple[float, ...] = (0.1, 0.2, 1.0, 2.0, 10.0, 30.0, 60.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)
_WIDTHS_S += (21600.0, 43200.0, 86400.0, 604800.0, 2419200.0)
_FIRST_WIDTH_S = _WIDTHS_S[0]
# The plot merges buckets further, to at most this many bars: finer than that is noise at 10 inches wide.
PLOT_BARS = 150
_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# The columns of every table: what happened to the call.
KINDS = ("allowed", "refused", "shadow")


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: ``30m``, ``1h``, ``7d`` (before now) or an ISO-8601 time; the epoch seconds it means."""
    m = _SINCE_RE.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
    when = event_time(text)
    if when is None:
        raise ValueError(f"--since {text!r}: use a duration such as 30m, 1h, 7d, or an ISO-8601 time")
    return when


def event_time(value: Any) -> float | None:
    """Epoch seconds from an audit ``time``: a number, or an ISO-8601 string (naive means UTC)."""
    if type(value) is float:  # the common case first
        return value if math.isfinite(value) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    return None


@dataclass
class Summary:
    """Counters only: nothing here grows with the number of lines."""

    source: str = ""
    lines: int = 0
    calls: int = 0
    skipped: int = 0  # torn, non-JSON or non-object lines
    before_since: int = 0
    no_time: int = 0
    other: Counter[str] = field(default_factory=Counter)  # non-call events (policy reloads...)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, code or decision)
    groups: dict[str, Counter[str]] = field(default_factory=dict)  # --by key -> kind -> count
    errors: Counter[str] = field(default_factory=Counter)  # --by key -> calls whose tool failed
    refused_tools: Counter[str] = field(default_factory=Counter)
    refused_callers: Counter[str] = field(default_factory=Counter)
    bucket_s: float = _FIRST_WIDTH_S
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket index -> counts per KINDS
    first: float | None = None
    last: float | None = None

    def add_time(self, when: float, kind: int) -> None:
        if self.first is None or when < self.first:
            self.first = when
        if self.last is None or when > self.last:
            self.last = when
        index = int(when // self.bucket_s)
        row = self.buckets.get(index)
        if row is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._coarsen()
                index = int(when // self.bucket_s)
                row = self.buckets.get(index)
            if row is None:
                row = self.buckets[index] = [0, 0, 0]
        row[kind] += 1

    def _coarsen(self) -> None:
        # The next width up, buckets merged into it: memory stays bounded whatever the time span.
        width = _next_width(self.bucket_s)
        self.buckets = _merged(self.buckets, round(width / self.bucket_s))
        self.bucket_s = width


def _next_width(width: float) -> float:
    return next((w for w in _WIDTHS_S if w > width * 1.0001), width * 2)


def _merged(buckets: dict[int, list[int]], ratio: int) -> dict[int, list[int]]:
    """Buckets ``ratio`` times as wide: bucket ``i`` goes into ``i // ratio`` (floor(floor(t/w)/r) = floor(t/(wr)))."""
    if ratio <= 1:
        return buckets
    merged: dict[int, list[int]] = {}
    for index, row in buckets.items():
        into = merged.setdefault(index // ratio, [0, 0, 0])
        for i, n in enumerate(row):
            into[i] += n
    return merged


def plot_buckets(s: Summary, bars: int = PLOT_BARS) -> tuple[float, dict[int, list[int]]]:
    """(width, buckets) for the plot: the summary's buckets merged up the same ladder until the span from the
    first to the last holds at most ``bars`` of them."""
    width, buckets = s.bucket_s, s.buckets
    while buckets and (max(buckets) - min(buckets) + 1) > bars:
        wider = _next_width(width)
        buckets = _merged(buckets, round(wider / width))
        width = wider
    return width, buckets


def _lines(path: str, progress: Any) -> Iterator[str]:
    # Text mode, decoding in C; bad UTF-8 becomes U+FFFD (and that line then fails to parse, and is skipped).
    stream: IO[str]
    if path == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        close = False
    else:
        stream = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in the finally below
        close = True
    try:
        done = 0
        for n, line in enumerate(stream, 1):
            done += len(line)
            if progress is not None and n % 8_192 == 0:
                progress(done)
            yield line
        if progress is not None:
            progress(done)
    finally:
        if close:
            stream.close()


def summarise(path: str, *, since: float | None = None, by: str = "code", progress: bool | None = None) -> Summary:
    """Stream the log at ``path`` (``-``: stdin) into a :class:`Summary`.

    ``progress``: a progress line on stderr (default: when stderr is a terminal and the input is a file).
    """
    summary = Summary(source=path)
    show = sys.stderr.isatty() if progress is None else progress
    with _progress(path if show and path != "-" else None) as tick:
        for raw in _lines(path, tick):
            summary.lines += 1
            _count(summary, raw, since, by)
    return summary


@contextlib.contextmanager
def _progress(path: str | None) -> Iterator[Any]:
    if path is None:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = os.path.getsize(path)
    with Progress(
        TextColumn("reading"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    ) as bar:
        task = bar.add_task("audit", total=total)
        yield lambda done: bar.update(task, completed=done)


_decode = json.JSONDecoder().raw_decode


def _count(s: Summary, raw: str, since: float | None, by: str) -> None:
    try:
        # raw_decode: json.loads without its per-call checks (a tenth of the time per line here).
        event, end = _decode(raw)
    except ValueError:  # torn line, binary garbage, bad UTF-8, an empty line
        if raw.strip():
            s.skipped += 1
        return
    if end < len(raw) and raw[end:].strip():  # something after the object: two lines run together
        s.skipped += 1
        return
    if not isinstance(event, dict):
        s.skipped += 1
        return
    other = event.get("event")
    if other is not None:
        s.other[f"{other}" + ("" if event.get("ok", True) else " (failed)")] += 1
        return
    if "tool" not in event or "decision" not in event:
        s.skipped += 1
        return
    when = event_time(event.get("time"))
    if since is not None and (when is None or when < since):
        s.before_since += 1
        return
    s.calls += 1
    decision = str(event.get("decision"))
    code = event.get("code")
    shadow = bool(event.get("shadow")) and (event.get("would_code") is not None or decision != "allow")
    if shadow:
        kind = 2
    elif decision == "allow":
        kind = 0
    else:
        kind = 1
    label = str(code) if code else decision
    s.decisions[(KINDS[kind], label)] += 1
    tool = str(event.get("tool"))
    identity = event.get("identity")
    caller = "(anonymous)" if identity is None else str(identity)
    key = {"tool": tool, "identity": caller}.get(by, label)
    group = s.groups.get(key)
    if group is None:
        group = s.groups[key] = Counter()
    group[KINDS[kind]] += 1
    if event.get("outcome") == "error":
        s.errors[key] += 1
    if kind == 1:
        s.refused_tools[tool] += 1
        s.refused_callers[caller] += 1
    if when is None:
        s.no_time += 1
    else:
        s.add_time(when, kind)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def print_summary(s: Summary, console: Console, *, by: str = "code", top: int = 10) -> None:
    span = f"{_when(s.first)} to {_when(s.last)}" if s.first is not None else "no timed events"
    console.print(f"[bold]{s.source}[/bold]: {s.calls:,} calls, {span}")
    notes = []
    if s.before_since:
        notes.append(f"{s.before_since:,} before --since")
    if s.skipped:
        notes.append(f"{s.skipped:,} unreadable lines skipped")
    notes.extend(f"{n:,} {name}" for name, n in sorted(s.other.items()))
    if notes:
        console.print("; ".join(notes))
    if not s.calls:
        return

    table = Table(title="calls by decision", title_justify="left")
    table.add_column("decision")
    table.add_column("code")
    table.add_column("calls", justify="right")
    table.add_column("share", justify="right")
    styles = {"allowed": "green", "refused": "red", "shadow": "yellow"}
    for (kind, label), n in sorted(s.decisions.items(), key=lambda item: (KINDS.index(item[0][0]), -item[1])):
        shown = "would refuse (shadow)" if kind == "shadow" else kind
        table.add_row(shown, label, f"{n:,}", f"{100.0 * n / s.calls:.1f}%", style=styles[kind])
    console.print(table)

    table = Table(title=f"calls by {by}", title_justify="left")
    table.add_column(by)
    for name in ("calls", *KINDS, "tool errors"):
        table.add_column(name, justify="right")
    ranked = sorted(s.groups.items(), key=lambda item: -sum(item[1].values()))
    for key, counts in ranked[: max(top, 20)]:
        total = sum(counts.values())
        table.add_row(key, f"{total:,}", *(f"{counts[k]:,}" for k in KINDS), f"{s.errors[key]:,}")
    if len(ranked) > max(top, 20):
        table.caption = f"{len(ranked) - max(top, 20):,} more not shown"
    console.print(table)

    for title, counter in (("top refused tools", s.refused_tools), ("top refused callers", s.refused_callers)):
        if not counter:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column("tool" if "tools" in title else "identity")
        table.add_column("refused", justify="right")
        for name, n in counter.most_common(top):
            table.add_row(name, f"{n:,}")
        console.print(table)


def plot(s: Summary, out: str | os.PathLike[str]) -> None:
    """A PNG of decisions over time: allowed, refused and would-be refusals (shadow) per time bucket."""
    plt = require_extra("matplotlib.pyplot", "plot", "mcp-guard audit --plot")
    fig = figure(s)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    with open(out, "wb") as fh:
        fh.write(buffer.getvalue())


def figure(s: Summary) -> Any:
    """The plot's matplotlib figure (the caller closes it): stacked bars of :func:`plot_buckets`, the x-axis
    from the first bucket to the end of the last."""
    matplotlib = require_extra("matplotlib", "plot", "mcp-guard audit --plot")
    matplotlib.use("Agg")  # no display needed
    # Through require_extra (typed Any): matplotlib's own stubs do not take datetimes for an axis.
    mdates = require_extra("matplotlib.dates", "plot", "mcp-guard audit --plot")
    plt = require_extra("matplotlib.pyplot", "plot", "mcp-guard audit --plot")

    width, buckets = plot_buckets(s)
    indices = sorted(buckets)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    try:
        if indices:
            # A continuous axis: empty buckets between events are drawn as zero, not interpolated over. One
            # more edge after the last bucket, so that the last (or only) bucket has a width on the chart.
            full = range(indices[0], indices[-1] + 2)
            times = [datetime.fromtimestamp(i * width, tz=timezone.utc) for i in full]
            series = [[buckets.get(i, (0, 0, 0))[k] for i in full[:-1]] for k in range(3)]
            series = [row + row[-1:] for row in series]
            colours = ("#4c9f70", "#d1495b", "#edae49")
            labels = ("allowed", "refused", "would refuse (shadow)")
            ax.stackplot(times, *series, labels=labels, colors=colours, step="post", alpha=0.9)
            # The limits are the data's own: matplotlib's default for a short span is years wide.
            ax.set_xlim(times[0], times[-1])
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            peak = max((sum(col) for col in zip(*series, strict=True)), default=0)
            ax.set_ylim(0, max(peak, 1) * 1.22)  # headroom, so the legend covers no data
            ax.legend(loc="upper left", ncol=3, frameon=False)
        ax.set_title(f"mcp-guard decisions over time ({s.calls:,} calls, per {_width(width)})")
        ax.set_ylabel(f"calls per {_width(width)}")
        ax.set_xlabel("time (UTC)")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _width(seconds: float) -> str:
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds:g} s"


__all__ = [
    "KINDS",
    "MAX_BUCKETS",
    "PLOT_BARS",
    "Summary",
    "event_time",
    "figure",
    "parse_since",
    "plot",
    "plot_buckets",
    "print_summary",
    "summarise",
]
