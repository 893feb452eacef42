"""The peer figure: Microsoft Agent Governance Toolkit's ``MCPGateway.intercept_tool_call``, µs per call.

Runs in an interpreter that has ``agent-governance-toolkit[core]`` (a spare venv, never the project's:
``python3 -m venv /tmp/agt-venv && /tmp/agt-venv/bin/pip install 'agent-governance-toolkit[core]'``);
``pipeline_cost.py --agt-python /tmp/agt-venv/bin/python`` runs it with ``--serve`` (one round of every case
per line read on stdin, one JSON line of µs back) between its own rounds, so both see the same machine load;
alone it prints one JSON object of medians. Imports nothing from mcp-guard. Cases, µs per call:

- ``allow with audit``: a tool on the allow list (parameter scan, budget, audit entry);
- ``deny with audit``: a tool not on the allow list (the gateway's default deny; audited too);
- ``approval (sync callback)``: a sensitive tool approved by a callback that answers at once.

The gateway's default audit sink (``InMemoryAuditSink``) and its own audit log are on, as shipped. API read
from ``agent_os/mcp_gateway.py`` (agent-governance-toolkit-core 4.1.0).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

from agent_os.integrations.base import GovernancePolicy
from agent_os.mcp_gateway import ApprovalStatus, MCPGateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--serve", action="store_true", help="one round per line read on stdin, until EOF")
    parser.add_argument("--per-batch", type=int, help="calls per batch (default 1000, quick 200)")
    opts = parser.parse_args()
    rounds, per_batch = (5, 200) if opts.quick else (25, 1000)
    per_batch = opts.per_batch or per_batch
    policy = GovernancePolicy(allowed_tools=["read_file", "wire"], max_tool_calls=10**12)
    gateway = MCPGateway(
        policy,
        sensitive_tools=["wire"],
        approval_callback=lambda agent_id, tool, params: ApprovalStatus.APPROVED,
    )
    cases = {
        "allow with audit": ("read_file", {"path": "a.txt"}, True),
        "deny with audit": ("delete_repo", {"name": "x"}, False),
        "approval (sync callback)": ("wire", {"amount": 10}, True),
    }
    for name, (tool, params, expected) in cases.items():
        allowed, reason = gateway.intercept_tool_call("alice", tool, params)
        if allowed != expected:
            raise SystemExit(f"{name}: expected allowed={expected}, got {allowed} ({reason})")

    def batch(tool: str, params: dict[str, object]) -> float:
        intercept = gateway.intercept_tool_call
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            intercept("alice", tool, params)
        elapsed = (time.perf_counter_ns() - start) / per_batch / 1000.0
        # Private lists, emptied only so memory stays flat over the run (the gateway never trims them).
        gateway._audit_log.clear()
        gateway._audit_sink._entries.clear()  # type: ignore[attr-defined]
        return elapsed

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for tool, params, _ in cases.values():  # warm-up round, not kept
        batch(tool, params)
    gc.collect()
    if opts.serve:
        print(json.dumps({"ready": 1.0}), flush=True)
        for _ in sys.stdin:
            gc.disable()
            row = {name: batch(tool, params) for name, (tool, params, _) in cases.items()}
            gc.enable()
            print(json.dumps(row), flush=True)
        return
    gc.disable()
    try:
        for _ in range(rounds):
            for name, (tool, params, _) in cases.items():
                samples[name].append(batch(tool, params))
    finally:
        gc.enable()
    print(json.dumps({name: statistics.median(values) for name, values in samples.items()}))


if __name__ == "__main__":
    main()
