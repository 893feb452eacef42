"""``mcp-guard audit``: streamed counts that match the events written, both time formats, bounded state, a PNG."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink
from mcp_guard._audit.summary import MAX_BUCKETS, event_time, parse_since, summarise
from mcp_guard._cli.main import main
from mcp_guard._install import install_hint

T0 = 1_764_000_000.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def event(t: float, tool: str, code: str | None, identity: str | None = "alice", **extra: Any) -> dict[str, Any]:
    return {
        "time": t,
        "tool": tool,
        "identity": identity,
        "decision": "allow" if code is None else "deny",
        "code": code,
        "outcome": "ok" if code is None else "denied",
        **extra,
    }


def write_log(path: Path, events: list[Any]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for e in events:
            fh.write(e if isinstance(e, str) else json.dumps(e))
            fh.write("\n")
    return path


def test_counts_match_a_real_guards_audit_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    memory = MemorySink()
    policy = {
        "version": "1",
        "default": "deny",
        "hide": ["secret"],
        "tools": {"read": {"rate_limit": "3/minute"}, "new": {"mode": "shadow", "action": "deny"}},
    }
    guard = Guard(policy, audit=[str(log), memory])
    for who in ("alice", "bob"):
        for name in ("read", "read", "read", "read", "secret", "other", "new"):
            guard.invoke(name, {}, lambda: "ok", identity=who)
    guard.close()

    s = summarise(str(log), by="tool", progress=False)
    assert s.calls == len(memory.events) == 14
    assert s.skipped == 0
    refused = [e for e in memory.events if e["decision"] == "deny" and not e.get("shadow")]
    assert s.refused_tools == Counter(e["tool"] for e in refused)
    assert s.refused_callers == Counter(e["identity"] for e in refused)
    assert s.decisions == {
        ("allowed", "allow"): 6,
        ("refused", "rate_limited"): 2,
        ("refused", "hidden"): 2,
        ("refused", "default_deny"): 2,
        ("shadow", "denied"): 2,
    }
    assert s.groups["new"] == {"shadow": 2}
    assert sum(sum(row) for row in s.buckets.values()) == 14


def test_both_time_formats_torn_lines_and_other_events(tmp_path: Path) -> None:
    events: list[Any] = [
        event(T0, "a", None),
        {**event(T0 + 60, "a", "denied"), "time": iso(T0 + 60)},
        {**event(T0 + 120, "b", "rate_limited", identity=None), "time": iso(T0 + 120).replace("Z", "+00:00")},
        '{"time": 1764000180, "tool": "b", "decis',  # torn
        "not json at all",
        "[1, 2]",
        {"event": "policy_reload", "ok": False, "error": "bad"},
        {"event": "policy_reload", "ok": True},
        "",
    ]
    path = write_log(tmp_path / "log.jsonl", events)
    s = summarise(str(path), progress=False)
    assert (s.calls, s.skipped) == (3, 3)
    assert s.other == {"policy_reload": 1, "policy_reload (failed)": 1}
    assert s.first == T0
    assert s.last == T0 + 120
    assert s.refused_callers == {"alice": 1, "(anonymous)": 1}

    since = summarise(str(path), since=T0 + 30, progress=False)
    assert (since.calls, since.before_since) == (2, 1)


def test_time_parsing() -> None:
    assert event_time(T0) == T0
    assert event_time(iso(T0)) == T0
    assert event_time("2025-11-24T16:00:00") == T0  # naive means UTC
    assert event_time("yesterday") is None
    assert event_time(True) is None
    assert event_time(float("nan")) is None
    assert parse_since("90m", now=T0) == T0 - 5400
    assert parse_since("1h", now=T0) == T0 - 3600
    assert parse_since(iso(T0)) == T0
    with pytest.raises(ValueError, match="--since"):
        parse_since("soon")


def test_state_stays_bounded_whatever_the_time_span(tmp_path: Path) -> None:
    # Ten years of events, one every ~9 hours: minute buckets would be 5 million; the summary coarsens.
    events = [event(T0 + i * 31_536.0, f"t{i % 3}", None if i % 2 else "denied") for i in range(10_000)]
    s = summarise(str(write_log(tmp_path / "long.jsonl", events)), progress=False)
    assert s.calls == 10_000
    assert len(s.buckets) <= MAX_BUCKETS
    assert sum(sum(row) for row in s.buckets.values()) == 10_000
    assert len(s.groups) == 2  # by code: "allow" and "denied"


def test_cli_tables_and_plot(tmp_path: Path, capsys: Any) -> None:
    events = [event(T0 + i, "place_order", "rate_limited" if i % 4 == 0 else None, f"u{i % 3}") for i in range(400)]
    events += [event(T0 + 400 + i, "withdraw", "denied", shadow=True, would_code="denied") for i in range(50)]
    path = write_log(tmp_path / "log.jsonl", events)
    png = tmp_path / "out.png"
    assert main(["audit", str(path), "--by", "identity", "--plot", str(png)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "450 calls" in out
    assert "would refuse (shadow) │ denied │ 50" in out
    assert "top refused tools" in out
    assert "place_order │ 100" in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_cli_input_errors_exit_2(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    path = write_log(tmp_path / "log.jsonl", [event(T0, "a", None)])
    assert main(["audit", str(path), "--since", "later"]) == 2
    assert "--since" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the 'plot' extra were not installed
    assert main(["audit", str(path), "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert install_hint("plot") in err
    assert len(err.strip().splitlines()) == 1


def test_progress_on_stderr_changes_nothing_counted(tmp_path: Path, capsys: Any) -> None:
    path = write_log(tmp_path / "log.jsonl", [event(T0 + i, "a", None) for i in range(20_000)])
    quiet = summarise(str(path), progress=False)
    shown = summarise(str(path), progress=True)
    assert (shown.calls, shown.decisions, shown.buckets) == (quiet.calls, quiet.decisions, quiet.buckets)
    assert capsys.readouterr().out == ""  # the progress line never mixes into the tables on stdout
