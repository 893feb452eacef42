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
- ``approval (sync callback)``: ``require_approval`` answered by ``lambda request: True`` (the default: a reused
  worker thread bounded by the approval timeout);
- ``approval (async callback)``: the same answered by an ``async def`` approver, awaited in line on the caller's
  loop (its own task, started at once; ``admit+finish`` and ``run`` ask it on the guard's background loop);
- ``approval (sync, no timeout)``: the sync callback with ``approval_timeout_s=None``: called in line on the
  calling thread by ``admit+finish`` and ``run`` (``arun`` still hands it to the worker, without a bound).

With ``--agt-python`` (or, by default, ``.bench-venvs/agt``, made on first use with PyPI
``agent-governance-toolkit[core]``; ``--no-agt`` to skip), Microsoft's ``MCPGateway`` runs its cases between our
rounds, and its approval path is set beside both in-line paths.

Then the price of approval grants (``grants ...``): a call needing approval (the in-line sync approver,
``admit+finish``) on a store without grants, on one with grants where the lookup misses (1,000 other grants
stored; the human is asked), and where a grant covers the call (nobody asked), on ``memory://`` and on a
``redis-server`` this script starts (skipped, with a line saying so, when there is none).

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
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import add_flags, figures, size
from runtime import start_redis

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, Policy, store_from_uri

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

# case -> (tool, args, expected admitted, guard: "default" | "async" | "inline")
CASES: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "allow": ("read_file", {"path": "a.txt"}, True, "default"),
    "deny (default)": ("delete_repo", {"name": "x"}, False, "default"),
    "deny_if firing": ("transfer", {"amount": 5000}, False, "default"),
    "limit, admitted": ("search", {"q": "x"}, True, "default"),
    "limit, refused": ("export", {"table": "t"}, False, "default"),
    "approval (sync callback)": ("wire", {"amount": 10}, True, "default"),
    "approval (async callback)": ("wire", {"amount": 10}, True, "async"),
    "approval (sync, no timeout)": ("wire", {"amount": 10}, True, "inline"),
}
ENTRY_POINTS = ("admit+finish", "run", "arun")


def noop(**_: Any) -> None:
    return None


def bare_case(case: str) -> Callable[[], object]:
    """The case with no pipeline: rule lookup, counter check, a small dict appended to a list."""
    tool, args, _, _ = CASES[case]
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


async def async_yes(request: ApprovalRequest) -> bool:
    return True


def inline_guard(**options: Any) -> Guard | None:
    """A guard asking a sync approver in line (``approval_timeout_s=None``), or None in a version without it."""
    try:
        return Guard(POLICY, approver=lambda request: True, retry=False, approval_timeout_s=None, **options)
    except (TypeError, ValueError):  # paired.py's "before" side may predate it
        return None


def guard_cases(sink: MemorySink) -> dict[str, Guard]:
    """One guard per approver set-up, keyed as in :data:`CASES` (a set-up this version lacks is left out)."""
    guards = {
        "default": Guard(POLICY, audit=sink, approver=lambda request: True, retry=False),
        "async": Guard(POLICY, audit=sink, approver=async_yes, retry=False),
    }
    inline = inline_guard(audit=sink)
    if inline is not None:
        guards["inline"] = inline
    for guard in guards.values():
        guard.finish(guard.admit("export", {"table": "t"}))  # fills the one-call limit: later calls are refused
    for case, (tool, args, admitted, kind) in CASES.items():
        if kind not in guards:
            continue
        admission = guards[kind].admit(tool, args)
        guards[kind].finish(admission, "ok" if admission.admitted else "denied")
        if admission.admitted != admitted:
            raise SystemExit(f"benchmark policy is wrong: {case} gave {admission.decision}")
    return guards


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


AGT_VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / "agt"


def agt_python(opts: argparse.Namespace) -> str | None:
    """The interpreter to run the peer in: ``--agt-python``, else ``.bench-venvs/agt`` (made here on first use).

    None (with the reason printed) when there is none: ``--no-agt``, ``--smoke`` (never an install from a test),
    or the install failed.
    """
    if opts.agt_python:
        return str(opts.agt_python)
    if opts.no_agt or opts.smoke:
        return None
    python = AGT_VENV / "bin" / "python"
    if python.exists():
        return str(python)
    print(f"making {AGT_VENV} with agent-governance-toolkit[core] (once; --no-agt to skip)...", file=sys.stderr)
    steps = (
        [sys.executable, "-m", "venv", str(AGT_VENV)],
        [str(python), "-m", "pip", "install", "-q", "agent-governance-toolkit[core]"],
    )
    for step in steps:
        done = subprocess.run(
            step, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        )
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"AGT not measured: {' '.join(step[:3])} ... failed: {tail}", file=sys.stderr)
            return None
    return str(python)


def start_peer(python: str | None, per_batch: int) -> Peer | str:
    """The AGT peer, or why it is not measured."""
    if not python:
        return "AGT not measured (no interpreter with agent-governance-toolkit: --agt-python PATH, or drop --no-agt)"
    try:
        return Peer(python, per_batch)
    except (OSError, RuntimeError, ValueError) as exc:
        return f"AGT not measured: {exc}"


def measure(rounds: int, per_batch: int, peer: Peer | None = None) -> dict[str, dict[str, float]]:
    """case -> column -> median µs per call over ``rounds`` interleaved rounds (the peer's round after ours)."""
    sink = MemorySink()
    guards = guard_cases(sink)
    cases = {case: spec for case, spec in CASES.items() if spec[3] in guards}
    loop = asyncio.new_event_loop()
    samples: dict[str, dict[str, list[float]]] = {c: {k: [] for k in ("bare", *ENTRY_POINTS)} for c in cases}
    bares = {case: bare_case(case) for case in cases}

    def admit_finish(guard: Guard, tool: str, args: dict[str, Any]) -> Callable[[], object]:
        def call() -> None:
            admission = guard.admit(tool, args)
            guard.finish(admission, "ok" if admission.admitted else "denied")

        return call

    def one_round(keep: bool) -> None:
        for case, (tool, args, _, kind) in cases.items():
            guard = guards[kind]
            cells = {
                "bare": timed(bares[case], per_batch),
                "admit+finish": timed(admit_finish(guard, tool, args), per_batch),
                "run": timed(lambda g=guard, t=tool, a=args: g.run(t, a, noop), per_batch),
                "arun": atimed(loop, lambda g=guard, t=tool, a=args: g.arun(t, a, noop), per_batch),
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
        for guard in guards.values():
            guard.close()
    return {case: {col: statistics.median(v) for col, v in cols.items()} for case, cols in samples.items()}


GRANT_VARIANTS = ("no grants", "lookup misses", "grant covers the call")
GRANTS_STORED = 1000


def grant_guards(uri: str) -> dict[str, tuple[Guard, dict[str, Any]]] | None:
    """variant -> (guard, arguments of its call): all ask the in-line sync approver on the store at ``uri``.

    ``no grants``: the store told it keeps none (so the guard never looks); the other two share a store
    holding ``GRANTS_STORED`` grants of other calls: ``lookup misses`` asks the human after the lookup,
    ``grant covers the call`` finds a grant and asks nobody. None in a version without grants or in-line asking.
    """
    bare_store = store_from_uri(uri)
    try:
        bare_store.supports_grants = False  # type: ignore[misc]  # this instance: as a store without grants
    except AttributeError:
        return None
    no_grants = inline_guard(store=bare_store)
    filler_store = store_from_uri(uri)
    if no_grants is None or not getattr(filler_store, "supports_grants", False):
        return None
    filler = Guard(POLICY, store=filler_store, approver=lambda r: ApprovalDecision.approve(ttl_s=3600), retry=False)
    for amount in range(GRANTS_STORED):
        filler.finish(filler.admit("wire", {"amount": amount}, identity="alice", session="s"))
    granted = inline_guard(store=filler_store)
    assert granted is not None
    covered = granted.admit("wire", {"amount": 0}, identity="alice", session="s")
    if covered.approval is None or covered.approval.grant is None:
        raise SystemExit(f"benchmark set-up is wrong: no grant covers the call on {uri}")
    granted.finish(covered)
    return {
        "no grants": (no_grants, {"amount": -1}),
        "lookup misses": (granted, {"amount": -1}),
        "grant covers the call": (granted, {"amount": 0}),
    }


def measure_grants(rounds: int, per_batch: int, uris: dict[str, str]) -> dict[str, dict[str, float]]:
    """store name -> variant -> median µs of ``admit`` + ``finish``, variants interleaved in each round."""
    setups = {name: grant_guards(uri) for name, uri in uris.items()}
    samples: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds + 1):  # the first round warms up and is not kept
        for name, setup in setups.items():
            if setup is None:
                continue
            for variant, (guard, args) in setup.items():

                def call(g: Guard = guard, a: dict[str, Any] = args) -> None:
                    g.finish(g.admit("wire", a, identity="alice", session="s"))

                samples.setdefault(name, {}).setdefault(variant, []).append(timed(call, per_batch))
    for setup in setups.values():
        for guard, _ in (setup or {}).values():
            guard.close()
    return {name: {v: statistics.median(xs[1:]) for v, xs in cols.items()} for name, cols in samples.items()}


def print_grants(grants: dict[str, dict[str, float]], note: str, out: dict[str, float]) -> None:
    print("\napproval grants: a call needing approval, admit + finish with the sync approver in line, no audit,")
    print(f"µs per call; the store with grants holds {GRANTS_STORED:,} grants of other calls (ratio: to no grants)")
    head = f"{'store':<10}" + "".join(f"{v:>24}" for v in GRANT_VARIANTS)
    print(head)
    for name, cols in grants.items():
        base = cols["no grants"]
        cells = f"{base:>24.2f}" + "".join(f"{cols[v]:>16.2f} ({cols[v] / base:.2f}x)" for v in GRANT_VARIANTS[1:])
        print(f"{name:<10}{cells}")
        out.update({f"grants {name}: {variant}": value for variant, value in cols.items()})
    if note:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_flags(parser)
    parser.add_argument("--agt-python", help="an interpreter with agent-governance-toolkit installed (a spare venv)")
    parser.add_argument("--no-agt", action="store_true", help="do not measure AGT (nor make its venv)")
    opts = parser.parse_args()
    rounds, per_batch = size(opts, (25, 1000), (5, 200), (1, 5))
    peer = start_peer(agt_python(opts), per_batch)
    with figures(opts.json) as out:
        try:
            results = measure(rounds, per_batch, peer if isinstance(peer, Peer) else None)
        except (OSError, RuntimeError, ValueError) as exc:  # the peer died midway: measure without it
            peer = f"AGT not measured: {exc}"
            results = measure(rounds, per_batch)
        print(f"Guard pipeline with a MemorySink audit sink vs the bare case, µs per call (median of {rounds}")
        print(f"interleaved rounds of {per_batch} calls); ratio = guarded / bare\n")
        head = f"{'case':<30}{'bare':>8}" + "".join(f"{col:>14}{'ratio':>10}" for col in ENTRY_POINTS)
        print(head)
        print("-" * len(head))
        for case, cols in results.items():
            bare = cols["bare"]
            cells = "".join(f"{cols[col]:>14.2f}{cols[col] / bare:>9.1f}x" for col in ENTRY_POINTS)
            print(f"{case:<30}{bare:>8.2f}{cells}")
            out.update({f"{case}: {col}": value for col, value in cols.items()})
        print("\nbare: dict lookup of the rule + integer counter check + list append of a small dict (+ the")
        print("comparison or callback of the case); the Guard cases all write one audit event to a MemorySink.")
        print("\npeer: Microsoft Agent Governance Toolkit MCPGateway.intercept_tool_call (its audit on), a round")
        print("of it after each of ours, same calls per batch")
        if isinstance(peer, str):
            print(peer)
        else:
            peer.close()
            print_peer(results, peer.medians(), out)
        redis = None if opts.smoke else start_redis()
        uris = {"memory": "memory://"}
        note = "redis rows skipped: " + ("--smoke" if opts.smoke else "no redis-server on PATH")
        if redis is not None:
            uris["redis"] = f"redis://127.0.0.1:{redis[1]}/0"
            note = ""
        try:
            grant_rounds, grant_batch = size(opts, (15, 500), (5, 100), (1, 5))
            print_grants(measure_grants(grant_rounds, grant_batch, uris), note, out)
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait(10)


def print_peer(results: dict[str, dict[str, float]], theirs: dict[str, float], out: dict[str, float]) -> None:
    ours = {
        "allow with audit": results["allow"]["admit+finish"],
        "deny with audit": results["deny (default)"]["admit+finish"],
        "approval (sync callback)": results["approval (sync callback)"]["admit+finish"],
    }
    print(f"{'path':<28}{'MCPGateway µs':>15}{'Guard admit+finish µs':>24}{'ours / AGT':>12}")
    for name, value in theirs.items():
        out[f"AGT MCPGateway {name}"] = value
        mine = ours.get(name)
        extra = f"{mine:>24.2f}{mine / value:>11.2f}x" if mine is not None else ""
        print(f"{name:<28}{value:>15.2f}{extra}")
    agt = theirs.get("approval (sync callback)")
    if agt is None:
        return
    print("\nthe in-line approval paths beside MCPGateway's approval (a callback it calls in line, no timeout):")
    in_line = {
        "async callback, arun": results.get("approval (async callback)", {}).get("arun"),
        "sync, no timeout, admit+finish": results.get("approval (sync, no timeout)", {}).get("admit+finish"),
        "sync, no timeout, run": results.get("approval (sync, no timeout)", {}).get("run"),
        "sync callback (worker), arun": results["approval (sync callback)"]["arun"],
    }
    print(f"{'our path':<34}{'µs':>10}{'ours / AGT':>12}")
    for name, mine in in_line.items():
        if mine is not None:
            print(f"{name:<34}{mine:>10.2f}{mine / agt:>11.2f}x")


if __name__ == "__main__":
    main()
