"""The in-memory store (``memory://``, the default): exact sliding-window logs in one process.

Each budget key holds a log of admitted entries ``(time, cost, token)`` in time order. An entry admitted at
``t`` counts for the times in ``[t, t + window_s)``, so a call at ``now`` sees the entries with
``t > now - window_s``. Checking every limit of a call at the moment of admission guarantees that no
interval of ``window_s`` ever holds more than ``max`` units (a sliding log, not a fixed window and not the
approximate two-bucket counter), so there is no double burst at a window boundary.

Do not use it when several processes must share a budget (each process would get its own): use
``redis://`` for that.
"""

from __future__ import annotations

import bisect
import itertools
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from mcp_guard._policy.decision import LimitCharge
from mcp_guard._stores._base import ADMIT, Clock, Part, Store, Trimmed, Usage, Verdict, plan

#: Sessions whose memory one memory store keeps at most; the least recently used go first.
MAX_SESSIONS = 10_000

_MAX_GRANTS = 100_000  # approval grants kept at most (oldest dropped first beyond that)

# How often (in the store's clock) idle keys are swept out. Keys seen again are pruned on access anyway;
# the sweep only bounds memory for keys that are never seen again (one per caller identity, say).
_SWEEP_EVERY_S = 60.0


def worse(a: tuple[float, LimitCharge] | None, wait: float, charge: LimitCharge) -> tuple[float, LimitCharge]:
    """Keep the refusal with the longest wait (the one the caller must respect)."""
    if a is None or wait > a[0]:
        return wait, charge
    return a


class _Log:
    """One budget key's admitted entries, oldest first, and the sum of their costs."""

    __slots__ = ("entries", "total", "window")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float, str]] = deque()
        self.total: float = 0
        self.window: float = 0.0  # the longest window seen for this key: older entries can go

    def prune(self, now: float) -> None:
        cutoff = now - self.window
        entries = self.entries
        while entries and entries[0][0] <= cutoff:
            self.total -= entries.popleft()[1]

    def used(self, now: float, window_s: float) -> float:
        if window_s >= self.window:  # pruned to exactly this window: the running total is the answer
            return self.total
        cutoff = now - window_s
        used: float = 0
        for t, cost, _ in reversed(self.entries):
            if t <= cutoff:
                break
            used += cost
        return used

    def wait(self, now: float, window_s: float, need: float) -> float:
        """Seconds until the oldest entries in the window that free ``need`` units have expired."""
        cutoff = now - window_s
        freed: float = 0
        for t, cost, _ in self.entries:
            if t <= cutoff:
                continue
            freed += cost
            if freed >= need:
                return max(t + window_s - now, 0.0)
        return window_s  # unreachable when cost <= max (plan() refuses the rest); a safe answer anyway

    def add(self, now: float, cost: float, token: str) -> None:
        entries = self.entries
        if entries and now < entries[-1][0]:
            # The clock went backwards (an injected clock, or a wall-clock step): keep time order.
            entries.insert(bisect.bisect_right(entries, now, key=lambda e: e[0]), (now, cost, token))
        else:
            entries.append((now, cost, token))
        self.total += cost

    def remove(self, token: str) -> None:
        kept = deque(e for e in self.entries if e[2] != token)
        if len(kept) != len(self.entries):
            self.entries = kept
            self.total = sum(e[1] for e in kept)


class MemoryStore(Store):
    """Exact sliding-window rate limits for one process (``memory://``, the default).

    Thread-safe: one lock around each decision. There are no awaits inside, so the async methods are exact
    under asyncio too (they run the same code without yielding). State lives in this object: two processes
    (or two ``MemoryStore`` objects) do not share budgets; use :class:`~mcp_guard.RedisStore`
    for that. ``clock`` defaults to :func:`time.monotonic`: a wall-clock step (NTP, a suspended laptop, an
    operator's ``date -s``) must not empty or fill every window; it is injectable so tests can move time.

    Memory stays bounded: entries older than the longest window seen for a key are pruned when the key is
    used, and keys whose entries have all expired are dropped by a sweep that runs at most once a minute.
    """

    schemes = ("memory",)

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        super().__init__(clock=clock)
        self._lock = threading.Lock()
        self._logs: dict[str, _Log] = {}
        self._seq = itertools.count(1)
        self._next_sweep = float("-inf")
        self._grants: dict[tuple[str, str], tuple[str, float]] = {}  # (owner, digest) -> (grant id, until)
        # session -> (expires at, part -> (records, bytes held, appended ever)); least recently used first.
        self._sessions: OrderedDict[str, tuple[float, dict[str, tuple[deque[str], int, int]]]] = OrderedDict()
        self._key = secrets.token_bytes(32)

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> MemoryStore:
        """``memory://``: takes only ``clock``."""
        return cls(**options)

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._logs)})"

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._decide(charges, reserve=False)

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._decide(charges, reserve=True)

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        keys = {c.key for c in charges}
        with self._lock:
            for key in keys:
                log = self._logs.get(key)
                if log is not None:
                    log.remove(token)
                    if not log.entries:
                        del self._logs[key]

    def _decide(self, charges: Sequence[LimitCharge], *, reserve: bool) -> Verdict:
        if not charges:
            return ADMIT
        groups, refused = plan(charges)
        if refused is not None:
            return refused
        logs = self._logs
        with self._lock:
            now = self.clock()
            if now >= self._next_sweep:
                self._sweep(now)
            worst: tuple[float, LimitCharge] | None = None
            for key, cost, limits in groups:
                log = logs.get(key)
                if log is None:
                    continue  # an unseen key: every limit on it has room for cost <= max
                for c in limits:  # widen before pruning, so a longer window keeps what it still counts
                    if c.window_s > log.window:
                        log.window = c.window_s
                log.prune(now)
                for c in limits:
                    used = log.used(now, c.window_s)
                    if used + cost > c.max:
                        worst = worse(worst, log.wait(now, c.window_s, used + cost - c.max), c)
            if worst is not None:
                return Verdict(ok=False, charge=worst[1], retry_after_s=worst[0])
            if not reserve:
                return Verdict(ok=True)
            token = f"m{next(self._seq)}"
            for key, cost, limits in groups:
                log = logs.get(key)
                if log is None:
                    log = logs[key] = _Log()
                for c in limits:
                    if c.window_s > log.window:
                        log.window = c.window_s
                if cost:  # a zero-cost entry would hold nothing
                    log.add(now, cost, token)
            return Verdict(ok=True, token=token)

    def usage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        """Exact, under the lock: the entries each charge's window holds now. Prunes nothing."""
        out: list[Usage] = []
        with self._lock:
            now = self.clock()
            for c in charges:
                log = self._logs.get(c.key)
                used: float = 0
                oldest: float | None = None
                if log is not None:
                    cutoff = now - c.window_s
                    for t, cost, _ in log.entries:
                        if t > cutoff:
                            used += cost
                            if oldest is None and cost:
                                oldest = t
                wait = None if oldest is None else max(oldest + c.window_s - now, 0.0)
                out.append(Usage(used, wait))
        return out

    def _sweep(self, now: float) -> None:
        # Drop keys whose newest entry has expired under the key's longest window (nothing there counts).
        self._next_sweep = now + _SWEEP_EVERY_S
        dead = [k for k, log in self._logs.items() if not log.entries or log.entries[-1][0] <= now - log.window]
        for key in dead:
            del self._logs[key]

    supports_grants = True

    def find_grant(self, owner: str, digests: Sequence[str]) -> str | None:
        with self._lock:
            now = self.clock()
            for digest in digests:
                entry = self._grants.get((owner, digest))
                if entry is not None:
                    if entry[1] > now:
                        return entry[0]
                    del self._grants[(owner, digest)]
        return None

    def save_grant(self, owner: str, digest: str, grant_id: str, ttl_s: float) -> None:
        with self._lock:
            now = self.clock()
            if len(self._grants) >= _MAX_GRANTS:  # expired ones first; a store is not an unbounded cache
                for key in [k for k, (_, until) in self._grants.items() if until <= now]:
                    del self._grants[key]
                while len(self._grants) >= _MAX_GRANTS:
                    del self._grants[next(iter(self._grants))]
            self._grants[(owner, digest)] = (grant_id, now + ttl_s)

    def close(self) -> None:
        """Forget every budget and session (a closed memory store starts empty if used again)."""
        with self._lock:
            self._logs.clear()
            self._sessions.clear()

    # -- session memory -----------------------------------------------------------------------------------

    def session_append(
        self, session: str, records: dict[str, list[str]], max_bytes: dict[str, int], ttl_s: float
    ) -> dict[str, Trimmed]:
        trimmed: dict[str, Trimmed] = {}
        with self._lock:
            now = self.clock()
            entry = self._sessions.pop(session, None)
            parts = entry[1] if entry is not None and entry[0] > now else {}
            for part, new in records.items():
                log, held, total = parts.get(part, (deque(), 0, 0))
                for record in new:
                    log.append(record)
                    held += len(record.encode("utf-8", "surrogatepass"))
                    total += 1
                dropped = dropped_bytes = 0
                cap = max_bytes.get(part, 0)
                while log and held > cap:
                    gone = len(log.popleft().encode("utf-8", "surrogatepass"))
                    held -= gone
                    dropped += 1
                    dropped_bytes += gone
                parts[part] = (log, held, total)
                if dropped:
                    trimmed[part] = (dropped, dropped_bytes)
            self._sessions[session] = (now + ttl_s, parts)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return trimmed

    def session_read(self, session: str, parts: list[str]) -> dict[str, Part]:
        with self._lock:
            entry = self._sessions.get(session)
            if entry is None or entry[0] <= self.clock():
                return {part: ([], 0) for part in parts}
            self._sessions.move_to_end(session)
            kept = entry[1]
            return {part: (list(kept[part][0]), kept[part][2]) if part in kept else ([], 0) for part in parts}

    def session_key(self) -> bytes:
        return self._key


__all__ = ["MemoryStore"]
