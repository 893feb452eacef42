"""What the session features of spec section 11 cost, beside a plain ``deny_if``, in one run.

Run: ``.venv/bin/python benchmarks/session_cost.py`` (``--quick`` for fewer samples, ``--json`` for the figures
as JSON, name -> µs median).

Rows:

- ``deny_if numeric (no session)``: ``Policy.evaluate`` of a rule with one numeric ``deny_if``: the baseline.
- ``from [user, trusted], 100 KB memory``: ``Policy.evaluate`` of a provenance check (two string leaves and a
  number) against a session view holding ~100 KB of user requests and tool results; the view is built once per
  call as the guard builds it (so joining and normalising the texts is counted), then the check runs.
- ``no_secrets, 20 secrets, 2 KB body``: a 2 KB email body checked against 20 remembered fingerprints.
- ``result scan: detect secrets, 100 KB``, ``result scan: detect pii, 100 KB``: ``judge_result`` of a redact
  rule with one detector on a 100 KB tool result (prose, some JSON, two secrets / some PII).
- ``Guard.run, deny_if, memory store`` vs ``Guard.run, from [user], memory store``: the whole pipeline, the
  second reading session memory (~100 KB) from ``memory://`` before deciding and remembering the result after.

Then a policy with **no session rules** (one ``deny_if``), a call in a session whose memory holds ~100 KB beside
the same call with no session, interleaved batches, on ``memory://`` and on a ``redis-server`` this script starts
(skipped, with a line saying so, when there is none): the session memory must cost such a call nothing (no
read, no write: ``no session rules, ...`` rows, with their ratio).

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
from runtime import start_redis

from mcp_guard import Guard, Policy, ResultSeen, SessionView
from mcp_guard._guard.memory import input_record, view_from
from mcp_guard._policy.results import judge_result
from mcp_guard._policy.session import fingerprint

USER_IBAN = "DE89 3704 0044 0532 0130 00"
PROSE = (
    "Hi team, the quarterly report is attached. Revenue grew 4.2% to 1,250,000.50 EUR; see the appendix for "
    "details. Please review before Thursday's meeting at 10:30 in room B. Thanks, Alice (alice@example.com)\n"
)


def text_of(size_bytes: int, extra: str = "") -> str:
    body = PROSE * (size_bytes // len(PROSE) + 1)
    return (body[: size_bytes - len(extra)] + extra) if extra else body[:size_bytes]


def timed(fn: Callable[[], Any], batches: int, per_batch: int) -> tuple[float, float]:
    """(median, p99) µs per call over ``batches`` batches of ``per_batch`` calls."""
    samples: list[float] = []
    fn()
    gc.collect()
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / per_batch / 1000.0)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def memory_parts(total: int) -> dict[str, tuple[list[str], int]]:
    """~``total`` bytes of texts as the store keeps them: the user's request and many tool results."""
    records = [input_record(f"Please pay my rent of 950 EUR to {USER_IBAN} and email landlord@example.com")]
    import json

    chunk = text_of(4000)
    while sum(len(r) for r in records) < total:
        records.append(json.dumps({"s": "r", "tool": "read_message", "srv": None, "tr": "u", "t": chunk}))
    return {"texts": (records, len(records))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flags(parser)
    opts = parser.parse_args()
    batches = size(opts, 30, 8, 2)
    memory_bytes = size(opts, 100_000, 100_000, 5_000)
    scan_bytes = size(opts, 100_000, 100_000, 5_000)

    plain = Policy.from_dict(
        {"version": "1", "default": "allow", "tools": {"pay": {"deny_if": {"args.amount": {"gt": 5000}}}}}
    )
    provenance = Policy.from_dict(
        {
            "version": "1",
            "default": "allow",
            "tools": {
                "pay": {
                    "require": {"args.iban": {"from": ["user", "trusted"]}, "args.to": {"from": ["user", "trusted"]}},
                    "deny_if": {"args.amount": {"gt": 5000}},
                },
                "send": {"require": {"args.body": {"no_secrets": True}}},
                "read_message": {"result": {"redact": {"result.text": {"detect": ["secrets"]}}}},
                "read_pii": {"result": {"redact": {"result.text": {"detect": ["pii"]}}}},
            },
        }
    )
    pay_args = {"iban": USER_IBAN, "to": "landlord@example.com", "amount": 950}
    parts = memory_parts(memory_bytes)
    key = b"k" * 32
    secrets = frozenset(fingerprint(f"sk-live-{i:04d}-abcdefghijklmnop", key) for i in range(20))
    secret_view = SessionView(secrets=secrets, secret_key=key)
    body = text_of(2000)
    scanned = text_of(
        scan_bytes, '\n{"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}\nghp_1234567890abcdefghijABCDEFGHIJ123456\n'
    )
    pii_text = text_of(scan_bytes, "\nIBAN DE89 3704 0044 0532 0130 00, card 4111 1111 1111 1111\n")
    read_rules = provenance.result_rules("read_message")
    pii_rules = provenance.result_rules("read_pii")

    def check_provenance() -> Any:
        view = view_from(parts, None)  # as the guard builds it for each call
        decision = provenance.evaluate("pay", pay_args, session_view=view)
        assert decision.allowed, decision
        return decision

    guard_plain = Guard(plain)
    guard_session = Guard(provenance)
    for record in parts["texts"][0]:  # ~100 KB of memory in the guard's own store
        guard_session.store.session_append("s", {"texts": [record]}, {"texts": 10 * memory_bytes}, 3600.0)

    rows: list[tuple[str, Callable[[], Any], int]] = [
        ("deny_if numeric (no session)", lambda: plain.evaluate("pay", pay_args), size(opts, 20_000, 5_000, 50)),
        (f"from [user, trusted], {memory_bytes // 1000} KB memory", check_provenance, size(opts, 20, 5, 2)),
        (
            "no_secrets, 20 secrets, 2 KB body",
            lambda: provenance.evaluate("send", {"body": body}, session_view=secret_view),
            size(opts, 20, 5, 2),
        ),
        (
            f"result scan: detect secrets, {scan_bytes // 1000} KB",
            lambda: judge_result(read_rules, scanned),
            size(opts, 3, 2, 1),
        ),
        (
            f"result scan: detect pii, {scan_bytes // 1000} KB",
            lambda: judge_result(pii_rules, pii_text),
            size(opts, 5, 2, 1),
        ),
        (
            "Guard.run, deny_if, memory store",
            lambda: guard_plain.run("pay", pay_args, lambda **_: "ok", session="s"),
            size(opts, 5_000, 1_000, 20),
        ),
        (
            f"Guard.run, from [user], {memory_bytes // 1000} KB memory store",
            lambda: guard_session.run("pay", pay_args, lambda **_: "ok", session="s"),
            size(opts, 20, 5, 2),
        ),
    ]
    assert judge_result(read_rules, scanned).redacted >= 2
    assert ResultSeen  # re-exported for readers of this script: the view's result type

    with figures(opts.json) as out:
        print(f"{'case':58} {'median µs':>12} {'p99 µs':>12}")
        for name, fn, per_batch in rows:
            median, p99 = timed(fn, batches, per_batch)
            out[name] = median
            print(f"{name:58} {median:12.1f} {p99:12.1f}")
        no_session_rules(opts, plain, pay_args, parts, out)


def no_session_rules(
    opts: argparse.Namespace,
    plain: Policy,
    pay_args: dict[str, Any],
    parts: dict[str, tuple[list[str], int]],
    out: dict[str, float],
) -> None:
    """A policy without session rules: a call in a session with ~100 KB of memory vs the same call with none."""
    redis = None if opts.smoke else start_redis()
    uris = {"memory": "memory://"} | ({"redis": f"redis://127.0.0.1:{redis[1]}/0"} if redis else {})
    rounds, per_batch = size(opts, (20, 1000), (6, 300), (1, 5))
    print(f"\npolicy with no session rules (one deny_if), Guard.run, µs per call (median of {rounds} interleaved")
    print(
        f"rounds of {per_batch} calls); the session's memory holds {sum(len(r) for r in parts['texts'][0]) // 1000} KB"
    )
    print(f"{'store':10}{'no session':>14}{'session with memory':>22}{'ratio':>9}")
    try:
        for name, uri in uris.items():
            guard = Guard(plain, store=uri, retry=False)
            for record in parts["texts"][0]:
                guard.store.session_append("s", {"texts": [record]}, {"texts": 10 * 100_000}, 3600.0)
            calls = {
                "no session": lambda g=guard: g.run("pay", pay_args, lambda **_: "ok"),
                "session with memory": lambda g=guard: g.run("pay", pay_args, lambda **_: "ok", session="s"),
            }
            samples: dict[str, list[float]] = {k: [] for k in calls}
            for call in calls.values():
                call()
            gc.collect()
            for _ in range(rounds):
                for label, call in calls.items():
                    start = time.perf_counter_ns()
                    for _ in range(per_batch):
                        call()
                    samples[label].append((time.perf_counter_ns() - start) / per_batch / 1000.0)
            medians = {label: statistics.median(values) for label, values in samples.items()}
            ratio = medians["session with memory"] / medians["no session"]
            print(f"{name:10}{medians['no session']:>14.2f}{medians['session with memory']:>22.2f}{ratio:>8.2f}x")
            out.update({f"no session rules, {name}: {label}": value for label, value in medians.items()})
            guard.close()
    finally:
        if redis is not None:
            redis[0].terminate()
            redis[0].wait(10)
    if redis is None:
        print("redis row skipped: " + ("--smoke" if opts.smoke else "no redis-server on PATH"))


if __name__ == "__main__":
    main()
