"""Nothing redacted leaks (spec 0.2 section 8): a value under a ``redact`` path never appears, whole or in part
(4+ characters), escaped or not, in the JSONL file's bytes, the logging output, OTel span attributes, the
payload the model gets, or a PolicyViolation; and other values are described, not hashed, unless the
deployment gives a key."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_guard import (
    ApprovalDecision,
    ApprovalRequest,
    Guard,
    JsonlSink,
    LoggingSink,
    MemorySink,
    OTelSink,
    Policy,
    PolicyViolation,
)
from mcp_guard._audit.events import REDACTED, scrub

# Secrets whose every 4-character run holds letters no hash, UUID, ISO time or field name contains.
LONG_KEY = "".join(f"Q{i % 10}X{(i * 7) % 10}Z" for i in range(33))[:164]
SHORT = 'QZ\\x\n"Y'  # a backslash, a newline and a quote: escaped differently by JSON and repr

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "pay": {
                "redact": ["args.api_key", "args.card.pin"],
                "deny_if": {"args.api_key": {"regex": "^QX"}, "args.card.pin": {"eq": "nope"}},
                "approve_if": {"args.api_key": {"contains": "Z"}},
                "args_schema": {"type": "object", "properties": {"api_key": {"type": "string", "maxLength": 500}}},
            },
        },
    }
)


def _forms(secret: str) -> set[str]:
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}
    forms |= {f.replace("\\", "\\\\") for f in list(forms)}
    return forms


def _leaks(secret: str, text: str) -> list[str]:
    """Every run of 4+ characters of any form of ``secret`` found in ``text`` (the whole value if shorter)."""
    found = []
    for form in _forms(secret):
        if len(form) < 4:
            if form in text:
                found.append(form)
            continue
        found.extend(form[i : i + 4] for i in range(len(form) - 3) if form[i : i + 4] in text)
    return found


def _approver_quoting(request: ApprovalRequest) -> ApprovalDecision:
    # A human (or a bot) who quotes the argument back in the refusal.
    return ApprovalDecision.deny(f"not with key {request.args.get('api_key')!r} and pin {request.args['card']}")


def _approver_raising(request: ApprovalRequest) -> bool:
    raise RuntimeError(f"cannot check {request.args.get('api_key')} / {json.dumps(request.args)}")


@pytest.mark.parametrize("secret", [LONG_KEY, SHORT, "QX" + SHORT], ids=["long", "short_escaped", "starts_qx"])
@pytest.mark.parametrize("approver", [_approver_quoting, _approver_raising], ids=["quoting", "raising"])
@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_no_redacted_value_reaches_any_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: str, approver: Any, path: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    file = tmp_path / "audit.jsonl"
    memory = MemorySink()
    sinks = [JsonlSink(file), LoggingSink(), OTelSink(tracer_provider=provider), memory]
    outputs: list[str] = []
    for on_violation in ("return", "raise"):
        guard = Guard(POLICY, audit=sinks, approver=approver, audit_key="k", on_violation=on_violation)  # type: ignore[arg-type]
        calls = [
            {"api_key": secret, "card": {"pin": secret}},  # deny_if (regex) fires for "QX..."; else approve_if
            {"api_key": secret + "A" * 600, "card": {"pin": "1"}},  # args_schema: too long
            {"api_key": "plain", "card": {"pin": secret}},
        ]
        for args in calls:
            with caplog.at_level(logging.DEBUG):
                try:
                    if path == "invoke":
                        result = guard.invoke("pay", args, lambda **_: "paid")
                    else:

                        async def paid(**_: Any) -> str:
                            return "paid"

                        result = await guard.ainvoke("pay", args, paid)
                    outputs.append(json.dumps(result) + repr(result))
                except PolicyViolation as exc:
                    outputs.extend([str(exc), repr(exc), json.dumps(exc.payload), repr(exc.payload)])
    for sink in sinks:
        if isinstance(sink, JsonlSink):
            sink.close()
    provider.shutdown()
    raw = file.read_bytes().decode("utf-8")
    spans = [
        json.dumps(dict(s.attributes or {})) + repr(dict(s.attributes or {})) for s in exporter.get_finished_spans()
    ]
    assert len(memory.events) == 6  # 3 calls, with on_violation return and raise
    assert len(spans) == 6
    for where, text in [
        ("jsonl", raw),
        ("logging", caplog.text),
        ("otel", "\n".join(spans)),
        ("model", "\n".join(outputs)),
    ]:
        assert _leaks(secret, text) == [], where
    assert all(e["args"]["api_key"] == REDACTED for e in memory.events)
    assert all(e["args"]["card"] == REDACTED for e in memory.events)


def test_scrub_blanks_parts_and_escaped_forms() -> None:
    args = {"k": LONG_KEY, "s": SHORT}
    for text in (
        f"got {LONG_KEY[:76]}…",  # cut short, as a reason quoting a long value does
        f"got {json.dumps(SHORT)}",
        f"got {SHORT!r}",
        f"got {json.dumps(repr(SHORT))}",
    ):
        cleaned = scrub(text, args, ["args.k", "args.s"])
        assert cleaned is not None
        assert REDACTED in cleaned
        assert _leaks(LONG_KEY, cleaned) == []
        assert _leaks(SHORT, cleaned) == []
        assert cleaned.startswith("got ")


def test_values_are_described_not_hashed_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_GUARD_AUDIT_KEY", raising=False)
    sink = MemorySink()
    Guard(Policy.from_dict({"version": "1", "default": "allow"}), audit=sink).invoke(
        "t", {"pin": "1234", "amount": 7500, "tags": ["a"], "o": {"x": 1}, "flag": True, "none": None}, lambda **_: 1
    )
    assert sink.events[0]["args"] == {
        "pin": {"type": "string", "len": 4},
        "amount": {"type": "integer"},
        "tags": {"type": "array", "items": 1},
        "o": {"type": "object", "keys": 1},
        "flag": {"type": "boolean"},
        "none": {"type": "null"},
    }


def test_fingerprints_are_keyed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_dict({"version": "1", "default": "allow"})
    events = []
    for key in ("first key", "second key", "first key"):
        monkeypatch.setenv("MCP_GUARD_AUDIT_KEY", key)
        sink = MemorySink()
        Guard(policy, audit=sink).invoke("t", {"pin": "1234"}, lambda **_: 1)
        events.append(sink.events[0]["args"]["pin"]["fp"])
    assert events[0] == events[2] != events[1]
    assert all(fp.startswith("hmac-sha256:") for fp in events)
