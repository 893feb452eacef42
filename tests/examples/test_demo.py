"""``make demo`` (examples/demo.py) run as a new user runs it: a subprocess, no API key, real MCP servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"

# (agent, tool, decision, code) in the order the calls happen: both frameworks, every kind of outcome.
EXPECTED = [
    ("langchain", "get_balance", "allow", "-"),
    ("langchain", "get_ticker", "allow", "-"),
    ("langchain", "place_order", "allow", "-"),
    ("langchain", "place_order", "deny", "denied"),
    ("langchain", "place_order", "deny", "requirement_failed"),
    ("langchain", "place_order", "allow", "-"),
    ("langchain", "delete_api_key", "deny", "hidden"),
    ("agents-sdk", "get_open_orders", "allow", "-"),
    ("agents-sdk", "create_listen_key", "allow", "-"),
    # The LangChain agent's two orders used 8,000 of alice's 10,000 USD daily cap: one store, both frameworks.
    ("agents-sdk", "place_order", "deny", "rate_limited"),
    ("agents-sdk", "withdraw", "allow", "-"),
    ("agents-sdk", "withdraw", "approved (scripted human)", "-"),
    ("agents-sdk", "withdraw", "deny", "approval_denied"),
    ("agents-sdk", "withdraw", "deny", "requirement_failed"),
    ("agents-sdk", "place_order", "deny", "invalid_arguments"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, float]:
    audit = tmp_path_factory.mktemp("demo") / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # the offline, scripted run
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, str(DEMO), "--audit", str(audit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    return run, audit, time.perf_counter() - started


def table_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("agent "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def test_demo_prints_every_call_with_decision_code_and_rule(
    demo: tuple[subprocess.CompletedProcess[str], Path, float],
) -> None:
    run, _, elapsed = demo
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    rows = table_rows(run.stdout)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == EXPECTED
    by_code = {r[4]: r for r in rows}
    assert by_code["denied"][5] == "/tools/place_order/deny_if/args.amount-gt"
    assert by_code["rate_limited"][5] == "/tools/place_order/limits/0"
    assert by_code["hidden"][5].startswith("/hide")
    assert all(r[5].startswith("/") for r in rows)  # every row names the rule that decided it
    assert '"amount":7500' in run.stdout
    assert "models: LangChain scripted; Agents SDK scripted" in run.stdout
    assert "approvals were answered by a scripted human" in run.stdout  # nobody was asked: the reader is told
    assert elapsed < 60, f"the demo took {elapsed:.1f} s; it must finish in under a minute"


def test_demo_points_to_an_audit_log_with_one_event_per_call(
    demo: tuple[subprocess.CompletedProcess[str], Path, float],
) -> None:
    run, audit, _ = demo
    assert f"audit log: {audit} (15 events" in run.stdout
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(events) == len(EXPECTED)
    assert [e["tool"] for e in events] == [tool for _, tool, _, _ in EXPECTED]
    assert {e["identity"] for e in events} == {"alice"}
    withdrawals = [e for e in events if e["tool"] == "withdraw"]
    # The policy redacts the destination address: it is never written in clear.
    assert all(e["args"]["address"] == "[redacted]" for e in withdrawals)
    assert "0xabab" not in audit.read_text()


def test_the_default_audit_log_goes_to_a_private_folder_of_its_own() -> None:
    sys.path.insert(0, str(DEMO.parent))
    try:
        from demo import fresh_audit_path  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DEMO.parent))
    first, second = fresh_audit_path(), fresh_audit_path()
    try:
        assert first.parent != second.parent  # not one shared /tmp/mcp-guard-demo/ for every user and run
        assert first.parent.parent == Path(tempfile.gettempdir())
        assert first.parent.stat().st_mode & 0o077 == 0  # mkdtemp: only its owner can enter it
    finally:
        first.parent.rmdir()
        second.parent.rmdir()
