"""``mcp-guard audit`` survives any line (spec section 10): a hostile line is counted as bad and skipped.

A log is untrusted input (anyone who can write to it, or a writer gone wrong): one line must never end the
summary with an internal error, nor make the reader hold more than a bounded line in memory. Each test writes a
real file and runs the real CLI (or ``summarise``), judging what it counted and that it exited 0.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mcp_guard._audit.summary import MAX_BUCKETS, MAX_KEY_CHARS, MAX_KEYS, event_time, parse_since, summarise
from mcp_guard._cli.main import main

T0 = 1_764_000_000.0


def good(t: float = T0, tool: str = "read", code: str | None = None, **extra: Any) -> str:
    event = {"time": t, "tool": tool, "identity": "alice", "decision": "deny" if code else "allow", "code": code}
    return json.dumps({**event, **extra})


def call(time: Any) -> str:
    # A call event whose only fault is its time, written by hand: json.dumps would refuse some of these.
    return '{"time": ' + str(time) + ', "tool": "read", "identity": "alice", "decision": "allow", "code": null}'


HOSTILE = {
    "time 1e18": call("1e18"),
    "time -1e308": call("-1e308"),
    "time 1e400 (inf once read)": call("1e400"),
    "time NaN": call("NaN"),
    "time Infinity": call("Infinity"),
    "time -Infinity": call("-Infinity"),
    "time a 400-digit integer": call("9" * 400),
    "time a 5000-digit integer": call("9" * 5000),
    "time before year 1 (ISO)": call('"0001-01-01T00:00:00+01:00"'),
    "time after year 9999 (epoch)": call("253402300800"),
    "time not a date": call('"yesterday"'),
    "time an object": call('{"a": 1}'),
    "time a boolean": call("true"),
    "5000 nested brackets": "[" * 5000 + "]" * 5000,
    "5000 nested, unclosed": "[" * 5000,
    "5000 nested in an argument": good(args={"x": "NEST"}).replace('"NEST"', "[" * 5000 + "]" * 5000),
    "900 nested as the tool": good(tool="NEST").replace('"NEST"', "[" * 900 + '"x"' + "]" * 900),
    "900 nested as the identity": good().replace('"alice"', "[" * 900 + "]" * 900),
    "900 nested as an event kind": '{"event": ' + "[" * 900 + "]" * 900 + "}",
    "a tool that is a number": good().replace('"read"', "12"),
    "a decision that is an object": good().replace('"allow"', '{"a": 1}'),
    "NUL bytes": good().replace("read", "re\x00ad"),
    "two objects on one line": good() + good(),
}


def write(path: Path, lines: list[str | bytes], *, final_newline: bool = True) -> Path:
    with path.open("wb") as fh:
        for i, line in enumerate(lines):
            fh.write(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"))
            if final_newline or i < len(lines) - 1:
                fh.write(b"\n")
    return path


def test_each_hostile_line_is_counted_and_skipped(tmp_path: Path) -> None:
    # Good lines around each hostile one: the hostile line costs only itself.
    lines: list[str | bytes] = [good(T0)]
    for text in HOSTILE.values():
        lines += [text, good(T0 + 60, code="denied")]
    lines += [b"\xff\xfe not utf-8 \xc3\x28", good(T0 + 120, tool="\u00e9crire")]
    path = write(tmp_path / "hostile.jsonl", lines)
    s = summarise(str(path), progress=False)
    assert s.calls == 2 + len(HOSTILE)
    assert s.skipped == len(HOSTILE) + 1  # "two objects on one line" is skipped as a whole
    assert (s.first, s.last) == (T0, T0 + 120)
    assert sum(sum(row) for row in s.buckets.values()) == s.calls


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_cli_survives_each_line(tmp_path: Path, name: str, capsys: Any) -> None:
    path = write(tmp_path / "one.jsonl", [good(T0), HOSTILE[name], good(T0 + 3600, code="denied")])
    assert main(["audit", str(path), "--by", "identity"]) == 0, capsys.readouterr().err
    out = " ".join(capsys.readouterr().out.split())
    assert "2 calls" in out
    assert "1 unreadable lines skipped" in out


def test_the_plot_survives_every_hostile_line(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path / "all.jsonl", [good(T0), *HOSTILE.values(), good(T0 + 3600, code="denied")])
    png = tmp_path / "out.png"
    assert main(["audit", str(path), "--plot", str(png)]) == 0, capsys.readouterr().err
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_times_at_the_ends_of_the_calendar_are_read_and_plotted(tmp_path: Path, capsys: Any) -> None:
    # Year 1 and year 9999 are in the calendar: counted, shown and plotted (not a crash, not a gigantic axis).
    first, last = event_time("0001-01-01T00:00:00Z"), event_time("9999-12-31T23:59:59Z")
    assert first is not None
    assert last is not None
    path = write(tmp_path / "ends.jsonl", [good(first), good(T0), good(last)])
    png = tmp_path / "ends.png"
    assert main(["audit", str(path), "--plot", str(png)]) == 0, capsys.readouterr().err
    out = " ".join(capsys.readouterr().out.split())
    assert "0001-01-01 00:00:00 UTC to 9999-12-31 23:59:59 UTC" in out
    s = summarise(str(path), progress=False)
    assert (s.calls, s.skipped) == (3, 0)
    indices = sorted(s.buckets)
    assert indices[-1] - indices[0] < MAX_BUCKETS  # the plot's axis is bounded too, not only the bucket count


def test_a_line_over_the_cap_is_skipped_and_the_next_one_read(tmp_path: Path, capsys: Any) -> None:
    long_line = good(args={"blob": "x" * 100_000})
    path = write(tmp_path / "long.jsonl", [good(T0), long_line, good(T0 + 1), "y" * 50_000], final_newline=False)
    assert main(["audit", str(path), "--max-line", "4096"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 calls" in out
    assert "2 lines over 4,096 bytes" in out
    s = summarise(str(path), progress=False, max_line=4096)
    assert (s.calls, s.skipped, s.too_long) == (2, 2, 2)
    # The cap is on the line without its newline: a line of exactly the cap is read.
    exact = good(T0, tool="x" * 10)
    s = summarise(str(write(tmp_path / "exact.jsonl", [exact])), progress=False, max_line=len(exact))
    assert (s.calls, s.too_long) == (1, 0)
    s = summarise(str(write(tmp_path / "exact.jsonl", [exact])), progress=False, max_line=len(exact) - 1)
    assert (s.calls, s.too_long) == (0, 1)


def test_a_50_mb_line_without_a_newline_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as fh:
        fh.write((good(T0) + "\n").encode())
        fh.write(b'{"time": 1, "tool": "')
        chunk = b"A" * (1 << 20)
        for _ in range(50):
            fh.write(chunk)
        fh.write(b"\n" + (good(T0 + 1) + "\n").encode())
        for _ in range(50):  # and one more, the last line, with no newline at all
            fh.write(chunk)
    tracemalloc.start()
    try:
        s = summarise(str(path), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (s.calls, s.skipped, s.too_long) == (2, 2, 2)
    assert peak < 4 * (1 << 20), f"peak {peak / 2**20:.1f} MiB while reading two 50 MiB lines"


def test_counters_stay_bounded_under_a_flood_of_distinct_names(tmp_path: Path) -> None:
    n = MAX_KEYS + 500
    lines: list[str | bytes] = [good(T0, tool=f"t{i}-" + "z" * 300, code="denied") for i in range(n)]
    s = summarise(str(write(tmp_path / "flood.jsonl", lines)), by="tool", progress=False)
    assert s.calls == n
    assert len(s.groups) <= MAX_KEYS + 1
    assert len(s.refused_tools) <= MAX_KEYS + 1
    assert all(len(k) <= MAX_KEY_CHARS + 1 for k in s.refused_tools)
    assert sum(s.refused_tools.values()) == n  # nothing lost: the rest is counted under one "(others)" row
    assert s.lumped > 0


def test_since_refuses_what_is_not_a_time() -> None:
    for text in ("9" * 400 + "d", "1e18", "NaN", "0000-01-01T00:00:00"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(text, now=T0)


def test_max_line_must_be_a_sensible_size(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path / "a.jsonl", [good()])
    for bad in ("0", "-5", "1e400", "inf", str(1 << 40)):
        with pytest.raises(SystemExit) as exc:  # argparse's own usage error: exit 2, one line naming the option
            main(["audit", str(path), "--max-line", bad])
        assert exc.value.code == 2
        assert "argument --max-line: a number of bytes" in capsys.readouterr().err
