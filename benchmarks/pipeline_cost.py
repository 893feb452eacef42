"""What the Guard's pipeline costs per call, beside the same case done by hand with no pipeline at all.

Run: ``.venv/bin/python benchmarks/pipeline_cost.py`` (``--quick`` for fewer rounds, ``--json`` for the medians
as JSON, name -> µs, ``--agt-python /tmp/agt-venv/bin/python`` to measure Microsoft's Agent Governance Toolkit
``MCPGateway`` in that interpreter, see ``agt_peer.py``).

Every Guard case runs with a :class:`~mcp_guard.MemorySink` audit sink on, through three entry points:
``admit`` + ``finish`` (what an adapter does), ``run`` and ``arun`` around a no-op tool. Cases:

- ``allow``: a rule with no conditions;
- ``deny (default)``: a tool no rule names (``default: deny``);
- ``deny_if firing``: a numeric ``deny_if`` that fires;
- ``limit, admitted``: a rate limit on ``memory://`` far from full;
- ``limit, refused``: a rate limit that is full (refused as ``rate_limited``);
- ``approval (sync callback)``: ``require_approval`` answered by ``lambda request: True``.

The ``bare`` column is the same case with no mcp-guard at all: a dict lookup of the tool's rule, an integer
counter check, a list append of a small dict (and, where the case has one, the comparison or the callback):
the least any enforcement can do, so ``admit+finish / bare`` is what the pipeline costs on top of that.
Cases and entry points are timed in interleaved rounds (machine noise hits all alike); medians, µs per call.

Not a timed test: figures depend on the machine; the script prints them and checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import add_flags, figures, size

from mcp_guard import Guard, MemorySink, Policy

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "read_file": {},
            "transfer": {"deny_if": {"args.amount": {"gt": 1000}}},
            "search": {"limits": [{"counter": "search", "window": "hour", "max": 10**12, "scope": "global"}]},
            "export": {"limits": [{"counter": "export", "window": "hour", "max": 1, "scope": "global"}]},
            "wire": {"action": "require_approval"},
        },
    }
)

# case -> (tool, args, expected admitted)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "allow": ("read_file", {"path": "a.txt"}, True),
    "deny (default)": ("delete_repo", {"name": "x"}, False),
    "deny_if firing": ("transfer", {"amount": 5000}, False),
    "limit, admitted": ("search", {"q": "x"}, True),
    "limit, refused": ("export", {"table": "t"}, False),
    "approval (sync callback)": ("wire", {"amount": 10}, True),
}
ENTRY_POINTS = ("admit+finish", "run", "arun")


def noop(**_: Any) -> None:
    return None


def bare_case(case: str) -> Callable[[], object]:
    """The case with no pipeline: rule lookup, counter check, a small dict appended to a list."""
    tool, args, _ = CASES[case]
    rules: dict[str, dict[str, Any]] = {
        "read_file": {},
        "transfer": {"deny_over": 1000},
        "search": {"max": 10**12},
        "export": {"max": 0},  # full
        "wire": {"approve": lambda request: True},
    }
    counts = {"search": 0, "export": 0}
    log: list[dict[str, Any]] = []

    def call() -> object:
        if len(log) > 10_000:
            log.clear()
        rule = rules.get(tool)
        ok = rule is not None
        if ok and "deny_over" in rule:
            ok = not args["amount"] > rule["deny_over"]
        if ok and "max" in rule:
            ok = counts[tool] < rule["max"]
            if ok:
                counts[tool] += 1
        if ok and "approve" in rule:
            ok = bool(rule["approve"]({"tool": tool, "args": args}))
        log.append({"tool": tool, "ok": ok})
        return ok

    return call


def guard_cases(sink: MemorySink) -> Guard:
    guard = Guard(POLICY, audit=sink, approver=lambda request: True, retry=False)
    guard.finish(guard.admit("export", {"table": "t"}))  # fills the one-call limit: later calls are refused
    for case, (tool, args, admitted) in CASES.items():
        admission = guard.admit(tool, args)
        guard.finish(admission, "ok" if admission.admitted else "denied")
        if admission.admitted != admitted:
            raise SystemExit(f"benchmark policy is wrong: {case} gave {admission.decision}")
    return guard


def timed(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - start) / n / 1000.0


def atimed(loop: asyncio.AbstractEventLoop, make: Callable[[], Any], n: int) -> float:
    async def batch() -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            await make()
        return (time.perf_counter_ns() - start) / n / 1000.0

    return loop.run_until_complete(batch())


class Peer:
    """``agt_peer.py --serve`` in the AGT interpreter: one round of its cases each time it is asked."""

    def __init__(self, python: str, per_batch: int) -> None:
        script = Path(__file__).with_name("agt_peer.py")
        cmd = [python, str(script), "--serve", "--per-batch", str(per_batch)]
        self.samples: dict[str, list[float]] = {}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._read()  # the "ready" line: imported and warmed up

    def _read(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            assert self.proc.stderr is not None
            tail = (self.proc.stderr.read().strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"agt_peer.py exited {self.proc.returncode}: {tail}")
        return {str(k): float(v) for k, v in json.loads(line).items()}

    def round(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        for name, value in self._read().items():
            self.samples.setdefault(name, []).append(value)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}


def start_peer(python: str | None, per_batch: int) -> Peer | str:
    """The AGT peer, or why it is not measured."""
    if not python:
        return "AGT not measured (pass --agt-python /path/to/venv/bin/python with agent-governance-toolkit)"
    try:
        return Peer(python, per_batch)
    except (OSError, RuntimeError, ValueError) as exc:
        return f"AGT not measured: {exc}"


def measure(rounds: int, per_batch: int, peer: Peer | None = None) -> dict[str, dict[str, float]]:
    """case -> column -> median µs per call over ``rounds`` interleaved rounds (the peer's round after ours)."""
    sink = MemorySink()
    guard = guard_cases(sink)
    loop = asyncio.new_event_loop()
    samples: dict[str, dict[str, list[float]]] = {c: {k: [] for k in ("bare", *ENTRY_POINTS)} for c in CASES}
    bares = {case: bare_case(case) for case in CASES}

    def admit_finish(tool: str, args: dict[str, Any]) -> Callable[[], object]:
        def call() -> None:
            admission = guard.admit(tool, args)
            guard.finish(admission, "ok" if admission.admitted else "denied")

        return call

    def one_round(keep: bool) -> None:
        for case, (tool, args, _) in CASES.items():
            cells = {
                "bare": timed(bares[case], per_batch),
                "admit+finish": timed(admit_finish(tool, args), per_batch),
                "run": timed(lambda t=tool, a=args: guard.run(t, a, noop), per_batch),
                "arun": atimed(loop, lambda t=tool, a=args: guard.arun(t, a, noop), per_batch),
            }
            sink.events.clear()
            for column, value in cells.items():
                if keep:
                    samples[case][column].append(value)

    one_round(keep=False)  # warms caches, the approver's worker and the event loop
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            one_round(keep=True)
            if peer is not None:
                peer.round()
    finally:
        gc.enable()
        loop.close()
        guard.close()
    return {case: {col: statistics.median(v) for col, v in cols.items()} for case, cols in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_flags(parser)
    parser.add_argument("--agt-python", help="an interpreter with agent-governance-toolkit installed (a spare venv)")
    opts = parser.parse_args()
    rounds, per_batch = size(opts, (25, 1000), (5, 200), (1, 5))
    peer = start_peer(opts.agt_python, per_batch)
    with figures(opts.json) as out:
        try:
            results = measure(rounds, per_batch, peer if isinstance(peer, Peer) else None)
        except (OSError, RuntimeError, ValueError) as exc:  # the peer died midway: measure without it
            peer = f"AGT not measured: {exc}"
            results = measure(rounds, per_batch)
        print(f"Guard pipeline with a MemorySink audit sink vs the bare case, µs per call (median of {rounds}")
        print(f"interleaved rounds of {per_batch} calls); ratio = guarded / bare\n")
        head = f"{'case':<26}{'bare':>8}" + "".join(f"{col:>14}{'ratio':>10}" for col in ENTRY_POINTS)
        print(head)
        print("-" * len(head))
        for case, cols in results.items():
            bare = cols["bare"]
            cells = "".join(f"{cols[col]:>14.2f}{cols[col] / bare:>9.1f}x" for col in ENTRY_POINTS)
            print(f"{case:<26}{bare:>8.2f}{cells}")
            out.update({f"{case}: {col}": value for col, value in cols.items()})
        print("\nbare: dict lookup of the rule + integer counter check + list append of a small dict (+ the")
        print("comparison or callback of the case); the Guard cases all write one audit event to a MemorySink.")
        print("\npeer: Microsoft Agent Governance Toolkit MCPGateway.intercept_tool_call (its audit on), a round")
        print("of it after each of ours, same calls per batch")
        if isinstance(peer, str):
            print(peer)
            return
        peer.close()
        ours = {
            "allow with audit": results["allow"]["admit+finish"],
            "deny with audit": results["deny (default)"]["admit+finish"],
            "approval (sync callback)": results["approval (sync callback)"]["admit+finish"],
        }
        print(f"{'path':<28}{'MCPGateway µs':>15}{'Guard admit+finish µs':>24}{'ours / AGT':>12}")
        for name, value in peer.medians().items():
            out[f"AGT MCPGateway {name}"] = value
            mine = ours.get(name)
            extra = f"{mine:>24.2f}{mine / value:>11.2f}x" if mine is not None else ""
            print(f"{name:<28}{value:>15.2f}{extra}")


if __name__ == "__main__":
    main()
