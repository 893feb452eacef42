"""``make demo-inbox`` (examples/inbox_demo.py --auto) run as a new user runs it: a subprocess, real MCP server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "inbox_demo.py"


def test_the_inbox_demo_runs_to_the_end_with_auto_approval() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # the offline, scripted run
    run = subprocess.run(
        [sys.executable, str(DEMO), "--auto"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"approval inbox: http://127\.0\.0\.1:\d+/\?token=[\w-]{32}", lines[0])
    # What the person saw: the withdrawal, its address redacted by the policy.
    assert '[auto] approving withdraw {"asset": "BTC", "amount": 0.25, "address": "[redacted]"}' in lines
    # What the server did: the approved withdrawal was sent.
    (withdraw,) = [line for line in lines if line.strip().startswith("withdraw ")]
    assert '"status": "sent"' in withdraw
