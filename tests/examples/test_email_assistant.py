"""``examples/email_assistant.py`` run as a user runs it (a subprocess, no API key, the real email MCP server):
the user's payment and email go through with no prompt, the injected payment and the key's exfiltration are
refused, and the audit says why. The judge is the server's own log of what it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "email_assistant.py"


def test_the_email_assistant_refuses_the_injection(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--audit", str(audit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    did = out.split("what the server really did:", 1)[1].strip().splitlines()
    assert [json.loads(line) for line in did] == [
        {"action": "send_money", "iban": "DE89 3704 0044 0532 0130 00", "amount": 950.0},
        {"action": "send_email", "to": ["landlord@example.com"], "subject": "Rent"},
    ]
    assert "AKIAIOSFODNN7EXAMPLE" not in out  # the model saw the key redacted; nobody printed it
    assert "ops key [redacted]" in out
    events = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    by_call = {e["call_id"]: e for e in events}
    assert by_call["injected-payment"]["code"] == "untrusted_argument"
    assert "read_message" in by_call["injected-payment"]["reason"]
    assert by_call["exfiltration"]["code"] == "secret_egress"
    assert by_call["rent"]["decision"] == "allow"
    assert by_call["note"]["decision"] == "allow"
    assert by_call["read-3"]["result"]["rules"] == ["/tools/read_message/result/redact/result.text-detect"]
    assert not any(e.get("code") == "approval_required" for e in events)  # nobody had to be asked
    assert "AKIAIOSFODNN7EXAMPLE" not in audit.read_text(encoding="utf-8")
