"""Audit at a glance (``mcp-guard audit FILE``): stream a JSONL audit log into counters, print tables, plot.

A log is untrusted input (spec section 10): whoever can write to it, or a writer gone wrong, decides what its
lines hold, and no line may end the summary or make it hold more than a bounded amount in memory:

* Memory stays flat with the size of the log. The file is read as bytes, a line at a time, never more than
  ``max_line`` bytes of one line (default :data:`MAX_LINE_BYTES`, ``--max-line``): a longer line is read past
  in chunks, counted (``too_long``) and skipped. What is kept grows only with the number of distinct tools,
  codes and callers, each capped at :data:`MAX_KEYS` (the rest are counted under ``(others)``) and
  :data:`MAX_KEY_CHARS` characters, and with the time buckets of the plot (their width doubles whenever they
  would span more than :data:`MAX_BUCKETS`).
* A line that is not one JSON object, or whose fields are not what the guard writes (a tool that is not a
  string, a time that is not a finite number or ISO-8601 text inside the calendar, ``NaN``/``Infinity``,
  nesting too deep for the parser, bad UTF-8, a torn line) is counted as unreadable and skipped, never fatal.

``time`` may be an epoch number (0.1) or an ISO-8601 string (0.2); both are read, from year 1 to year 9999.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from mcp_guard._errors import require_extra

MAX_BUCKETS = 2_000
#: Longest line read (bytes, without its newline); a longer one is skipped unread (``--max-line``).
MAX_LINE_BYTES = 1 << 20
#: Bounds on ``--max-line``: a line must be able to hold an event, and no line is held over 1 GiB.
MAX_LINE_RANGE = (64, 1 << 30)
#: Distinct names kept per table (tools, codes, callers); the rest are counted under :data:`OTHERS`.
MAX_KEYS = 10_000
#: Longest name kept (characters); a longer one is cut and marked with an ellipsis.
MAX_KEY_CHARS = 200
OTHERS = "(others)"
_SKIP_CHUNK = 1 << 16  # how much of an over-long line is read at a time while it is skipped
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: The calendar Python's datetime can show: year 1 to year 9999 (epoch seconds). A time outside is not a time.
MIN_TIME = -62_135_596_800.0
MAX_TIME = 253_402_300_799.0
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
    when: float | None
    if m:
        when = (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
        if not MIN_TIME <= when <= MAX_TIME:  # also -inf: "999...9d" reads as infinity
            when = None
    else:
        when = event_time(text)
    if when is None:
        raise ValueError(
            f"--since {text[:40]!r}: use a duration such as 30m, 1h, 7d, or an ISO-8601 time (years 1 to 9999)"
        )
    return when


def event_time(value: Any) -> float | None:
    """Epoch seconds from an audit ``time``: a number, or an ISO-8601 string (naive means UTC).

    ``None`` for anything else: not a number or a string, not finite, not a date, or outside years 1 to 9999.
    """
    if type(value) is float:  # the common case first
        return value if MIN_TIME <= value <= MAX_TIME else None  # NaN compares False: refused too
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            when = float(value)  # an int too large for a float raises OverflowError
        except OverflowError:
            return None
        return when if MIN_TIME <= when <= MAX_TIME else None
    if isinstance(value, str) and len(value) <= 64:  # ISO-8601 with a zone and nanoseconds is about 35
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            stamp = parsed.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
        return stamp if MIN_TIME <= stamp <= MAX_TIME else None
    return None


def when_text(t: float) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC``, by calendar arithmetic (not the platform's time_t)."""
    # isoformat, not strftime: glibc's %Y writes year 1 as "1", not "0001".
    return (_EPOCH + timedelta(seconds=t)).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds") + " UTC"


@dataclass
class Summary:
    """Counters only: nothing here grows with the number of lines."""

    source: str = ""
    lines: int = 0
    calls: int = 0
    skipped: int = 0  # torn, non-JSON, non-object, over-long lines, or fields the guard never writes
    too_long: int = 0  # of those skipped: lines over max_line bytes
    max_line: int = MAX_LINE_BYTES
    lumped: int = 0  # counts put under OTHERS because a table already held MAX_KEYS names
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
        first, last = self.first, self.last
        if first is None or last is None:
            self.first = self.last = first = last = when
        elif when < first:
            self.first = first = when
        elif when > last:
            self.last = last = when
        # Bounded by the span, not only the count: the plot draws every bucket between the first and the last,
        # so two events years apart must not mean millions of empty minute buckets.
        while int(last // self.bucket_s) - int(first // self.bucket_s) >= MAX_BUCKETS:
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

    def key(self, table: Mapping[Any, Any], name: str, kind: str | None = None) -> Any:
        """``name`` (``(kind, name)`` when ``kind`` is given) as a row of ``table``: cut to
        :data:`MAX_KEY_CHARS` characters, or :data:`OTHERS` once the table holds :data:`MAX_KEYS` rows."""
        if len(name) > MAX_KEY_CHARS:
            name = name[:MAX_KEY_CHARS] + "…"
        row = name if kind is None else (kind, name)
        if row not in table and len(table) >= MAX_KEYS:
            self.lumped += 1
            return OTHERS if kind is None else (kind, OTHERS)
        return row


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


def _lines(stream: IO[bytes], max_line: int, progress: Any) -> Iterator[bytes | None]:
    """Each line of ``stream`` as bytes (newline kept), or ``None`` for a line over ``max_line`` bytes.

    ``readline(limit)`` (in C) never returns more than the limit, so a line of any length, or a file with no
    newline at all, is held at most ``max_line + 1`` bytes at a time; the rest of a long line is read past in
    chunks and dropped.
    """
    readline = stream.readline
    limit = max_line + 1
    done = 0
    n = 0
    while True:
        line = readline(limit)
        if not line:
            break
        n += 1
        done += len(line)
        if len(line) == limit and not line.endswith(b"\n"):  # over the cap: skip to the next newline
            while True:
                rest = readline(_SKIP_CHUNK)
                done += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
        else:
            yield line
        if progress is not None and n % 8_192 == 0:
            progress(done)
    if progress is not None:
        progress(done)


@contextlib.contextmanager
def _opened(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as stream:
        yield stream


def summarise(
    path: str,
    *,
    since: float | None = None,
    by: str = "code",
    progress: bool | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> Summary:
    """Stream the log at ``path`` (``-``: stdin) into a :class:`Summary`.

    ``progress``: a progress line on stderr (default: when stderr is a terminal and the input is a file).
    ``max_line``: the longest line read, in bytes; longer ones are counted as unreadable and skipped.
    """
    low, high = MAX_LINE_RANGE
    if not low <= max_line <= high:
        raise ValueError(f"--max-line must be between {low:,} and {high:,} bytes, not {max_line!r}")
    summary = Summary(source=path, max_line=max_line)
    show = sys.stderr.isatty() if progress is None else progress
    with _opened(path) as stream, _progress(path if show and path != "-" else None) as tick:
        for raw in _lines(stream, max_line, tick):
            summary.lines += 1
            if raw is None:
                summary.skipped += 1
                summary.too_long += 1
            else:
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


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# raw_decode: json.loads without its per-call checks (a tenth of the time per line here). NaN and Infinity are
# not JSON: a line holding one is unreadable (json would read them as floats).
_decode = json.JSONDecoder(parse_constant=_not_json).raw_decode
_NO_TIME = object()


def _count(s: Summary, raw: bytes, since: float | None, by: str) -> None:
    text = raw.decode("utf-8", "replace")  # bad UTF-8 becomes U+FFFD (and the line then fails to parse)
    try:
        event, end = _decode(text)
    except (ValueError, RecursionError):  # torn line, garbage, an empty line; NaN; nesting past the parser's depth
        if text.strip():
            s.skipped += 1
        return
    if end < len(text) and text[end:].strip():  # something after the object: two lines run together
        s.skipped += 1
        return
    if not isinstance(event, dict):
        s.skipped += 1
        return
    other = event.get("event")
    if other is not None:
        if not isinstance(other, str):
            s.skipped += 1
            return
        label = s.key(s.other, other + ("" if event.get("ok", True) else " (failed)"))
        s.other[label] += 1
        return
    # The fields the guard writes, with the types it writes them in; anything else is not a call event of ours.
    get = event.get
    tool, decision, code, identity = get("tool"), get("decision"), get("code"), get("identity")
    if (
        type(tool) is not str
        or type(decision) is not str
        or not (code is None or type(code) is str)
        or not (identity is None or type(identity) is str)
    ):
        s.skipped += 1
        return
    stamp = get("time")
    when = None if stamp is None else event_time(stamp)
    if stamp is not None and when is None:  # a time outside the calendar, NaN, 1e400, not a date
        s.skipped += 1
        return
    if since is not None and (when is None or when < since):
        s.before_since += 1
        return
    s.calls += 1
    shadow = bool(get("shadow")) and (get("would_code") is not None or decision != "allow")
    if shadow:
        kind = 2
    elif decision == "allow":
        kind = 0
    else:
        kind = 1
    label = code or decision
    # Each table: a name already in it goes straight in (the usual case); a new one is checked for room first.
    row = (KINDS[kind], label)
    s.decisions[row if row in s.decisions else s.key(s.decisions, label, KINDS[kind])] += 1
    caller = "(anonymous)" if identity is None else identity
    key = tool if by == "tool" else caller if by == "identity" else label
    group = s.groups.get(key)
    if group is None:
        key = s.key(s.groups, key)
        group = s.groups.get(key)
        if group is None:
            group = s.groups[key] = Counter()
    group[KINDS[kind]] += 1
    if get("outcome") == "error":
        s.errors[key] += 1
    if kind == 1:
        s.refused_tools[tool if tool in s.refused_tools else s.key(s.refused_tools, tool)] += 1
        s.refused_callers[caller if caller in s.refused_callers else s.key(s.refused_callers, caller)] += 1
    if when is None:
        s.no_time += 1
    else:
        s.add_time(when, kind)


def _when(t: float | None) -> str:
    return "-" if t is None else when_text(t)


def print_summary(s: Summary, console: Console, *, by: str = "code", top: int = 10) -> None:
    span = f"{_when(s.first)} to {_when(s.last)}" if s.first is not None else "no timed events"
    console.print(f"[bold]{s.source}[/bold]: {s.calls:,} calls, {span}")
    notes = []
    if s.before_since:
        notes.append(f"{s.before_since:,} before --since")
    if s.skipped:
        notes.append(f"{s.skipped:,} unreadable lines skipped")
    if s.too_long:
        notes.append(f"{s.too_long:,} lines over {s.max_line:,} bytes among them")
    if s.lumped:
        notes.append(f"over {MAX_KEYS:,} distinct names in a table: {s.lumped:,} counted under {OTHERS}")
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
            # Calendar arithmetic, not the platform's time_t; the first bucket may start before year 1.
            times = [_EPOCH + timedelta(seconds=min(max(i * width, MIN_TIME), MAX_TIME)) for i in full]
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
