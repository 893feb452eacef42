"""Audit: one event per call whatever the outcome, redaction, whole JSONL lines under concurrent writers,
the logging and OpenTelemetry sinks, and sinks that fail without breaking the call."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_guard import ApprovalDecision, Guard, JsonlSink, LoggingSink, MemorySink, OTelSink, Policy
from mcp_guard._audit.events import REDACTED, audit_sinks, iso_time, scrub, summarize_args
from tests.support.clock import FakeClock

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "pay": {
                "redact": ["args.card", "args.note.secret"],
                "deny_if": {"args.card": {"regex": "^0000"}},
                "limits": [{"counter": "pay", "window": "minute", "max": 2, "scope": "identity"}],
            },
            "held": {"action": "require_approval"},
            "free": {},
        },
    }
)

FIELDS = {
    "time",
    "tool",
    "server",
    "identity",
    "session",
    "decision",
    "code",
    "rule",
    "reason",
    "policy",
    "args",
    "outcome",
    "latency_ms",
}


class ErrorResult:
    isError = True


def _guard(sink: Any, clock: FakeClock | None = None, **options: Any) -> Guard:
    if clock is not None:
        options["clock"] = clock
    return Guard(POLICY, audit=sink, retry=False, **options)


# -- one event per call ------------------------------------------------------------------------------------


def test_one_event_per_call_whatever_the_outcome(clock: FakeClock) -> None:
    sink = MemorySink()
    guard = _guard(sink, clock, approver=lambda _: ApprovalDecision.deny("nope"))
    who: dict[str, Any] = {"server": "bank", "identity": "ann", "session": "s1"}

    def boom(**_: Any) -> None:
        raise RuntimeError("upstream exploded")

    assert guard.invoke("pay", {"card": "4111", "amount": 3}, lambda **_: "paid", **who) == "paid"
    assert isinstance(guard.invoke("pay", {"card": "4111"}, lambda **_: ErrorResult(), **who), ErrorResult)
    with pytest.raises(RuntimeError):
        guard.invoke("pay", {"card": "4111"}, boom, **who)
    guard.invoke("pay", {"card": "0000"}, lambda **_: "paid", **who)  # deny_if
    guard.invoke("nothing", {}, lambda **_: "x", **who)  # default deny
    guard.invoke("held", {}, lambda **_: "x", **who)  # a human says no
    # The raising call kept its charge (it may have acted; spec 0.2), the error result gave its back:
    # 2 of 2 are used.
    guard.invoke("pay", {"card": "4111"}, lambda **_: "paid", **who)  # rate limited

    got = [(e["outcome"], e["decision"], e["code"]) for e in sink.events]
    assert got == [
        ("ok", "allow", None),
        ("error", "allow", None),
        ("error", "allow", None),
        ("denied", "deny", "denied"),
        ("denied", "deny", "default_deny"),
        ("denied", "deny", "approval_denied"),
        ("denied", "deny", "rate_limited"),
    ]
    for event in sink.events:
        assert set(event) >= FIELDS
        assert event["time"] == iso_time(clock())
        assert (event["server"], event["identity"], event["session"]) == ("bank", "ann", "s1")
        assert event["policy"] == POLICY.hash
        assert event["latency_ms"] >= 0
        json.dumps(event)  # every event is plain JSON
    assert sink.events[2]["error"] == "RuntimeError"
    assert "upstream exploded" not in json.dumps(sink.events)
    assert sink.events[3]["rule"] == "/tools/pay/deny_if/args.card-regex"
    assert sink.events[5]["reason"] == "nope"
    assert sink.events[6]["retry_after_s"] == 60.0


async def test_the_async_path_writes_the_same_events(clock: FakeClock) -> None:
    sync_sink, async_sink = MemorySink(), MemorySink()

    async def paid(**_: Any) -> str:
        return "paid"

    for args in ({"card": "4111"}, {"card": "0000"}, {"card": "4111"}, {"card": "4111"}):
        _guard(sync_sink, clock).invoke("pay", args, lambda **_: "paid")
    async_guard = _guard(async_sink, clock)
    for args in ({"card": "4111"}, {"card": "0000"}, {"card": "4111"}, {"card": "4111"}):
        await async_guard.ainvoke("pay", args, paid)

    def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k not in ("latency_ms", "call_id")} for e in events]

    # Each sync call had a fresh guard (fresh budget); compare the first two, decided alike.
    assert strip(sync_sink.events[:2]) == strip(async_sink.events[:2])


# -- argument values: hashed, or redacted --------------------------------------------------------------------


def test_argument_values_are_hashed_and_redact_paths_never_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    guard = _guard(str(path))
    secret_card, secret_note = "4111-2222-3333-4444", "hunter2-very-secret"
    args = {"card": secret_card, "amount": 12.5, "note": {"secret": secret_note, "memo": "rent"}}
    guard.invoke("pay", args, lambda **_: "paid")
    guard.invoke("pay", {**args, "card": "0000-9999-secret"}, lambda **_: "paid")  # denied: reason quotes it
    guard.close()
    text = path.read_text()
    for secret in (secret_card, secret_note, "0000-9999-secret", "rent"):
        assert secret not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["args"]["card"] == REDACTED
    assert first["args"]["note"] == REDACTED  # a nested redact path blanks its top-level container
    assert first["args"]["amount"] == {"type": "number"}  # no key: type and size only, no fingerprint
    assert second["code"] == "denied"
    assert set(first["args"]) == {"card", "amount", "note"}


def test_fingerprints_identify_equal_values_without_revealing_them() -> None:
    key = b"deployment secret"
    a = summarize_args({"x": {"b": 1, "a": [1, 2]}, "y": "hello"}, key=key)
    b = summarize_args({"x": {"a": [1, 2], "b": 1}, "y": "hello!"}, key=key)
    assert isinstance(a, dict)
    assert isinstance(b, dict)
    assert a["x"] == b["x"]  # key order does not matter
    assert a["y"]["fp"] != b["y"]["fp"]
    assert a["y"] == {"type": "string", "len": 5, "fp": a["y"]["fp"]}
    assert a["y"]["fp"].startswith("hmac-sha256:")
    assert summarize_args({"y": "hello"}, key=b"another key") != {"y": a["y"]}  # keyed: no guessing offline
    assert "hello" not in json.dumps(a)
    odd = summarize_args({"mixed": {1: "a", "b": 2}, "obj": object()}, key=key)  # keys that do not sort
    assert isinstance(odd, dict)
    assert set(odd) == {"mixed", "obj"}


@pytest.mark.parametrize(
    ("redact", "expect"),
    [
        (["args.k"], {"k": REDACTED, "n": "hash"}),
        (["k"], {"k": REDACTED, "n": "hash"}),
        (["args.k.deep.er"], {"k": REDACTED, "n": "hash"}),
        (["args"], {"k": REDACTED, "n": REDACTED}),
        (["args.missing"], {"k": "hash", "n": "hash"}),
    ],
)
def test_redact_paths(redact: list[str], expect: dict[str, str]) -> None:
    got = summarize_args({"k": {"deep": {"er": 1}}, "n": 2}, redact)
    assert isinstance(got, dict)
    assert {k: ("hash" if isinstance(v, dict) else v) for k, v in got.items()} == expect


def test_scrub_blanks_redacted_values_quoted_in_a_reason() -> None:
    args = {"token": "sk-live-abc", "nested": {"pin": 4321}, "plain": "visible"}
    text = "token sk-live-abc with pin 4321 and visible"
    assert scrub(text, args, ["args.token", "args.nested.pin"]) == f"token {REDACTED} with pin {REDACTED} and visible"
    assert scrub(text, args, []) == text
    assert scrub(None, args, ["args.token"]) is None


# -- sinks ---------------------------------------------------------------------------------------------------


def test_a_failing_sink_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def write(self, event: Mapping[str, Any]) -> None:
            raise OSError("disk full")

    good = MemorySink()
    guard = Guard(POLICY, audit=[Broken(), good])
    with caplog.at_level(logging.ERROR, logger="mcp_guard.audit"):
        assert guard.invoke("free", {}, lambda **_: "ok") == "ok"
        assert guard.invoke("nothing", {}, lambda **_: "ok")["code"] == "default_deny"
    assert len(good.events) == 2  # the other sinks still get every event
    assert "disk full" in caplog.text


def test_logging_sink_writes_json(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(POLICY, audit="logging")
    assert isinstance(guard.audit_sinks[0], LoggingSink)
    with caplog.at_level(logging.INFO, logger="mcp_guard.audit"):
        guard.invoke("free", {"q": 1}, lambda **_: "ok", identity="ann")
    (record,) = [r for r in caplog.records if r.name == "mcp_guard.audit"]
    event = json.loads(record.getMessage())
    assert (event["tool"], event["identity"], event["outcome"]) == ("free", "ann", "ok")


def test_otel_sink_records_a_span_per_call() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(POLICY, audit=OTelSink(tracer_provider=provider))
    guard.invoke("free", {"q": 1}, lambda **_: "ok", server="srv", identity="ann")
    guard.invoke("nothing", {}, lambda **_: "ok")
    first, second = exporter.get_finished_spans()
    assert first.name == "mcp_guard free"
    attrs = dict(first.attributes or {})
    assert attrs["mcp_guard.tool"] == "free"
    assert attrs["mcp_guard.server"] == "srv"
    assert attrs["mcp_guard.outcome"] == "ok"
    assert attrs["mcp_guard.policy"] == POLICY.hash
    assert json.loads(str(attrs["mcp_guard.args"]))["q"] == {"type": "integer"}
    assert dict(second.attributes or {})["mcp_guard.code"] == "default_deny"
    provider.shutdown()


def test_audit_argument_forms(tmp_path: Path) -> None:
    memory = MemorySink()
    sinks = audit_sinks([str(tmp_path / "a.jsonl"), "logging", memory, tmp_path / "b.jsonl"])
    assert [type(s).__name__ for s in sinks] == ["JsonlSink", "LoggingSink", "MemorySink", "JsonlSink"]
    assert audit_sinks(None) == ()
    with pytest.raises(TypeError, match="audit="):
        audit_sinks(42)


def test_close_closes_the_file_and_writing_again_reopens_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    guard = Guard(POLICY, audit=path)
    guard.invoke("free", {}, lambda **_: "ok")
    guard.close()
    guard.close()
    guard.invoke("free", {}, lambda **_: "ok")
    guard.close()
    assert len(path.read_text().splitlines()) == 2


# -- whole lines under concurrent writers ------------------------------------------------------------------

BIG = "x" * 9000  # each line is over twice PIPE_BUF (4096): atomic only because of one O_APPEND write


def _check_lines(path: Path, expected: set[tuple[str, int]]) -> None:
    seen: set[tuple[str, int]] = set()
    for line in path.read_bytes().split(b"\n")[:-1]:
        event = json.loads(line)  # a torn or interleaved line would not parse
        assert event["pad"] == BIG
        seen.add((event["writer"], event["n"]))
    assert seen == expected
    assert path.read_bytes().endswith(b"\n")


def test_jsonl_lines_stay_whole_with_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    barrier = threading.Barrier(8)

    def writer(name: str) -> None:
        barrier.wait()
        for n in range(150):
            sink.write({"writer": name, "n": n, "pad": BIG})

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    _check_lines(path, {(f"t{i}", n) for i in range(8) for n in range(150)})


def test_jsonl_lines_stay_whole_with_many_processes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    go = tmp_path / "go"
    script = textwrap.dedent(
        """
        import os, sys, time
        from mcp_guard import JsonlSink
        path, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
        sink = JsonlSink(path)
        while not os.path.exists(go):  # start together, so the writes overlap
            time.sleep(0.001)
        for n in range(300):
            sink.write({"writer": name, "n": n, "pad": "x" * 9000})
        sink.close()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"p{i}", str(go)], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    _check_lines(path, {(f"p{i}", n) for i in range(4) for n in range(300)})


def test_jsonl_lines_are_valid_utf8_whatever_the_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    sink.write({"tool": "bad\ud800surrogate", "identity": "zoë ☃", "obj": object()})
    sink.close()
    event = json.loads(path.read_bytes().decode("utf-8"))  # strict decoding
    assert event["identity"] == "zoë ☃"
    assert event["tool"].startswith("bad")
    assert event["obj"].startswith("<object object")
