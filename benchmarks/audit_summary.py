"""``mcp-guard audit`` over large logs: wall time and peak memory for 100k and 1M lines (memory should be flat).

Generates a day of synthetic audit events in /tmp (half with epoch times as 0.1 writes them, half ISO-8601 as
0.2 does; a morning rollout in shadow mode, then enforcement; a burst of rate limits; one torn line), runs the
real CLI in a child process per size, and reads the child's own peak RSS from ``os.wait4``.
Run: ``python benchmarks/audit_summary.py [--plot /tmp/audit.png]`` (the plot is of the largest log).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

DAY0 = 1_764_028_800.0  # 2025-11-25 00:00 UTC
TOOLS = [
    ("get_balance", 0.34),
    ("get_open_orders", 0.2),
    ("place_order", 0.18),
    ("cancel_order", 0.1),
    ("create_listen_key", 0.08),
    ("withdraw", 0.05),
    ("delete_api_key", 0.03),
    ("transfer_between_accounts", 0.02),
]


def generate(path: str, lines: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    names = [t for t, _ in TOOLS]
    weights = [w for _, w in TOOLS]
    callers = [f"agent-{i:03d}" for i in range(200)]
    shadow_until = DAY0 + 10 * 3600  # the policy ran in shadow until 10:00, then was enforced
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            # A day of traffic, busier in the afternoon (a sine over the day), sampled in order.
            u = (i + rng.random()) / lines
            t = DAY0 + 86400 * (u - 0.12 * math.sin(2 * math.pi * u) / (2 * math.pi))
            tool = rng.choices(names, weights)[0]
            who = rng.choice(callers)
            code = None
            if tool == "delete_api_key":
                code = "hidden"
            elif tool == "transfer_between_accounts":
                code = "default_deny"
            elif tool == "withdraw" and rng.random() < 0.4:
                code = "approval_required"
            elif tool == "place_order" and rng.random() < 0.08:
                code = "denied"
            elif DAY0 + 15 * 3600 <= t < DAY0 + 15.5 * 3600 and tool == "create_listen_key":
                code = "rate_limited"  # a runaway loop at 15:00
            shadow = code is not None and t < shadow_until
            event = {
                "time": t if i % 2 else datetime.fromtimestamp(t, tz=timezone.utc).isoformat(),
                "tool": tool,
                "server": "exchange",
                "identity": who,
                "session": f"s-{rng.randrange(5000)}",
                "decision": "allow" if code is None else "deny",
                "code": code,
                "rule": None if code is None else f"/tools/{tool}",
                "reason": None,
                "policy": "sha256:1f2e3d4c5b6a",
                "args": {"symbol": "str(6)", "amount": "int"},
                "outcome": "ok" if code is None or shadow else "denied",
                "latency_ms": round(rng.uniform(0.05, 40.0), 3),
            }
            if shadow:
                event.update(shadow=True, would_code=code, would_rule=event["rule"])
            fh.write(json.dumps(event, separators=(",", ":")))
            fh.write("\n")
        fh.write('{"time": 1764115199.0, "tool": "get_bal')  # a writer killed mid-line


def run(path: str, plot: str | None) -> tuple[float, float, float]:
    """Wall seconds, the child's CPU seconds and its peak RSS in MiB."""
    command = [sys.executable, "-m", "mcp_guard._cli.main", "audit", path, "--by", "tool"]
    if plot:
        command += ["--plot", plot]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if child.stderr is not None:
        child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mcp-guard audit failed on {path}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="also write the plot of the largest log here")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated line counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = tempfile.mkdtemp(prefix="mcp-guard-audit-")
    header = f"{'lines':>10} {'file MiB':>9} {'wall s':>7} {'CPU s':>6} {'lines/CPU s':>12} {'peak RSS MiB':>13}  run"
    print(header)
    for n in sizes:
        path = os.path.join(folder, f"audit-{n}.jsonl")
        generate(path, n)
        size = os.path.getsize(path) / 2**20
        runs = [("table", None)] + ([("table + --plot", args.plot)] if args.plot and n == sizes[-1] else [])
        for label, plot in runs:
            wall, cpu, rss = run(path, plot)
            print(f"{n:>10,} {size:>9.1f} {wall:>7.2f} {cpu:>6.2f} {n / cpu:>12,.0f} {rss:>13.1f}  {label}")
        os.remove(path)
    os.rmdir(folder)


if __name__ == "__main__":
    main()
