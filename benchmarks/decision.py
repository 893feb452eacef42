"""Per-decision cost of ``Policy.evaluate`` (the pure evaluator), by policy size and rule kind.

Run: ``.venv/bin/python benchmarks/decision.py`` (``--quick`` for fewer batches and rules, ``--json`` for the
figures as JSON, name -> µs median).

Each case times batches of calls with ``time.perf_counter_ns`` and reports the median and p99 of the
per-call time over the batches, then the ratio of the 10,000-rule policy to the 10-rule one. Targets
(issue 2): median <= 0.5 µs for an exact-name allow with no conditions, <= 1.5 µs with one ``deny_if``
numeric condition, and no more than 1.2x slower at 10,000 rules than at 10. Issue 11: a FIRING ``deny_if``
<= 1.5 µs too (reasons quote no argument value, so each check's refusal is built once and reused).
The strict-type checks of issue 9 (type mismatch, NaN screen) must not slow the allow path.

Not a timed test: figures depend on the machine; the script prints them and checks nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from _report import add_flags, figures, size

from mcp_guard import Policy

SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number", "minimum": 0}, "memo": {"type": "string", "maxLength": 64}},
    "required": ["amount"],
    "additionalProperties": False,
}


def make_policy(n: int, kind: str) -> tuple[Policy, str, dict[str, Any]]:
    """A policy of ``n`` tool rules of one kind, the tool to call (in the middle) and its arguments."""
    mid = n // 2
    rule: dict[str, Any] = {}
    args: dict[str, Any] = {"amount": 5}
    if kind == "deny_if":
        rule = {"deny_if": {"args.amount": {"gt": 1000}}}
    elif kind == "args_schema":
        rule = {"args_schema": SCHEMA}
    elif kind == "identity_limit":
        rule = {"limits": [{"counter": "c", "window": "minute", "max": 30, "scope": "grant"}]}
    if kind == "glob":
        tools = {f"ns{i}_*": dict(rule) for i in range(n)}
        tool = f"ns{mid}_read"
    else:
        tools = {f"tool_{i}": dict(rule) for i in range(n)}
        tool = f"tool_{mid}"
    policy = Policy.from_dict({"version": "1", "default": "deny", "tools": tools})
    return policy, tool, args


def sample(call: Callable[[], object], batches: int, per_batch: int) -> list[float]:
    """Per-call µs of ``batches`` batches of ``per_batch`` calls (GC off while timing)."""
    samples: list[float] = []
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter_ns()
            for _ in range(per_batch):
                call()
            samples.append((time.perf_counter_ns() - start) / per_batch / 1000.0)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def interleaved(
    calls: list[Callable[[], object]], batches: int, per_batch: int, rounds: int
) -> list[tuple[float, float]]:
    """(median, p99) per call, measured in ``rounds`` interleaved rounds so every size sees the same load.

    Other work on the machine comes and goes; timing one size after another would bill a busy spell to
    whichever size happened to run then and distort the 10k / 10 ratio.
    """
    for call in calls:  # warm the memo and the caches
        for _ in range(per_batch):
            call()
    pooled: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            pooled[i].extend(sample(call, max(1, batches // rounds), per_batch))
    return [summary(p) for p in pooled]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_flags(parser, quick=False)
    parser.add_argument("--quick", action="store_true", help="fewer batches (a rough figure in a few seconds)")
    opts = parser.parse_args()
    with figures(opts.json) as out:
        run(opts, out)


def run(opts: argparse.Namespace, out: dict[str, float]) -> None:
    batches, per_batch, rounds = size(opts, (300, 1000, 10), (40, 500, 4), (4, 20, 2))
    sizes = size(opts, (10, 1_000, 10_000), (10, 1_000, 10_000), (10, 100))
    kinds = {
        "exact allow": ("exact", {}),
        "glob allow": ("glob", {}),
        "deny_if numeric": ("deny_if", {}),
        "args_schema": ("args_schema", {}),
        "grant-scoped limit": ("identity_limit", {"identity": "alice"}),
    }

    def noop(tool: str, args: Any = None, *, identity: str | None = None) -> None:
        return None  # same call shape as evaluate: what the interpreter alone costs

    # Warm up the interpreter and the CPU before the first timed case, which would otherwise pay for it.
    warm, tool, args = make_policy(10, "exact")
    sample(lambda: warm.evaluate(tool, args), batches, per_batch)
    base, _ = summary(sample(lambda: noop("t", {}), batches, per_batch))
    out["calibration: no-op call"] = base
    print(f"Policy.evaluate, µs per decision (median / p99 over {batches} batches of {per_batch} calls,")
    print(f"sizes interleaved in {rounds} rounds)")
    print(f"(calibration: a Python call to a no-op function with these arguments costs {base:.3f} µs here)\n")
    header = f"{'case':<22}" + "".join(f"{f'{n:,} rules':>24}" for n in sizes) + f"{'10k / 10':>10}" + f"{'no-op':>8}"
    print(header)
    print("-" * len(header))
    for label, (kind, extra) in kinds.items():
        calls: list[Callable[[], object]] = []
        loads: list[float] = []
        for n in sizes:
            t0 = time.perf_counter()
            policy, tool, args = make_policy(n, kind)
            loads.append(time.perf_counter() - t0)
            decision = policy.evaluate(tool, args, **extra)
            if decision.action != "allow":
                raise SystemExit(f"benchmark policy is wrong: {label} at {n} rules gave {decision}")
            calls.append(lambda e=policy.evaluate, t=tool, a=args, x=extra: e(t, a, **x))
        # A no-op call timed in the same rounds: how fast this machine was while the case ran.
        calls.append(lambda x=extra: noop("t", {}, **x))
        *results, (noop_med, _) = interleaved(calls, batches, per_batch, rounds)
        cells = [f"{med:6.3f} / {p99:6.3f} ({load:4.1f}s)" for (med, p99), load in zip(results, loads, strict=True)]
        ratio = results[-1][0] / results[0][0]
        out.update({f"{label}, {n:,} rules": med for n, (med, _) in zip(sizes, results, strict=True)})
        print(f"{label:<22}" + "".join(f"{c:>24}" for c in cells) + f"{ratio:>9.2f}x" + f"{noop_med:>8.3f}")
    print("\n(load time of the policy in brackets; no-op: a Python call with the same arguments, same rounds)")
    # A name never seen before (the memo is cleared before every call): what resolution itself costs.
    print("\nfirst call for a name (memo cleared each call), µs median / p99:")
    for label, kind in (("exact", "exact"), ("glob", "glob")):
        calls = []
        for n in sizes:
            policy, tool, args = make_policy(n, kind)
            memo = getattr(policy, "_cache", None)  # private: cleared here only to time resolution
            if memo is None:  # a source where the memo has another name: nothing to clear, no figure
                break

            def fresh(m: Any = memo, e: Any = policy.evaluate, t: str = tool, a: Any = args) -> object:
                m.clear()
                return e(t, a)

            calls.append(fresh)
        if not calls:
            print(f"  {label:<20} (not measured: this source has no Policy._cache memo to clear)")
            continue
        results = interleaved(calls, max(rounds, batches // 3), per_batch, rounds)
        out.update({f"first call, {label}, {n:,} rules": med for n, (med, _) in zip(sizes, results, strict=True)})
        cells = [f"{med:6.3f} / {p99:6.3f}" for med, p99 in results]
        print(f"  {label:<20}" + "".join(f"{c:>24}" for c in cells) + f"{results[-1][0] / results[0][0]:>9.2f}x")
    # Refusals beside the allows they are measured against, in the same rounds (issue 11: a firing deny_if
    # <= 1.5 µs, a plain deny no dearer than an allow).
    policy, tool, _ = make_policy(10, "deny_if")
    plain, plain_tool, _ = make_policy(10, "exact")
    deny, mismatch, nan, default, allow, passing = interleaved(
        [
            lambda: policy.evaluate(tool, {"amount": 5000}),
            lambda: policy.evaluate(tool, {"amount": "5000"}),
            lambda: policy.evaluate(tool, {"amount": float("nan")}),
            lambda: policy.evaluate("unknown_tool", {}),
            lambda: plain.evaluate(plain_tool, {}),  # the call shape of the default_deny case
            lambda: policy.evaluate(tool, {"amount": 5}),
        ],
        batches,
        per_batch,
        rounds,
    )
    out["deny_if firing, 10 rules"] = deny[0]
    out["deny_if type mismatch"] = mismatch[0]
    out["NaN argument"] = nan[0]
    out["default_deny, 10 rules"] = default[0]
    print(f"\ndeny_if firing (10 rules):            {deny[0]:.3f} / {deny[1]:.3f} µs   (target <= 1.5, issue 11)")
    print(f"deny_if on a type mismatch ('5000'): {mismatch[0]:.3f} / {mismatch[1]:.3f} µs")
    print(f"NaN argument (invalid_arguments):    {nan[0]:.3f} / {nan[1]:.3f} µs")
    print(f"default_deny (10 rules):             {default[0]:.3f} / {default[1]:.3f} µs")
    print(f"  beside: exact allow (10 rules):    {allow[0]:.3f} / {allow[1]:.3f} µs   (a plain deny <= this)")
    print(f"  beside: deny_if not firing:        {passing[0]:.3f} / {passing[1]:.3f} µs")


if __name__ == "__main__":
    main()
