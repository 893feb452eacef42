"""The rate-limit store contract, and the planning every built-in store shares.

A store keeps one sliding-window log per budget key and answers three questions for a call's limits,
all-or-nothing: would they all admit now (``check``), reserve them all now (``reserve``), give a
reservation back (``release``). Each has an async twin. Stores never decide policy: they only count.

This module imports no backend: each backend imports it, and :mod:`mcp_guard._stores` imports the backends
(so they register their URI schemes here) and builds stores from a URI.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from mcp_guard._policy.decision import LimitCharge

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A store's answer for one call's limits.

    ``ok``: all limits admit (and, from ``reserve``, are now reserved under ``token``).
    Otherwise ``charge`` is the limit that refused and ``retry_after_s`` when it will have room again
    (``None`` when it never will: the call's cost exceeds the limit's ``max``).
    """

    ok: bool
    token: str | None = None
    charge: LimitCharge | None = None
    retry_after_s: float | None = None


ADMIT = Verdict(ok=True)

# One budget of a call: its key, the cost charged to it, and every limit on it.
Group = tuple[str, float, tuple[LimitCharge, ...]]


def plan(charges: Sequence[LimitCharge]) -> tuple[list[Group], Verdict | None]:
    """Group a call's charges by budget key: ``(key, cost, limits)``, in first-seen order.

    Within one call a key is charged once, with the largest cost among its charges, and every limit on it
    is checked. The second value is a refusal that needs no backend: a cost that can never fit (greater
    than a limit's ``max``) or a negative cost (never allowed to add budget back), with ``retry_after_s``
    ``None``. Shared by every built-in store so they agree on this.
    """
    if len(charges) == 1:  # the common case, without the dict
        c = charges[0]
        groups: list[Group] = [(c.key, c.cost, (c,))]
    else:
        by_key: dict[str, list[LimitCharge]] = {}
        for c in charges:
            by_key.setdefault(c.key, []).append(c)
        groups = [(key, max(c.cost for c in cs), tuple(cs)) for key, cs in by_key.items()]
    for _key, cost, limits in groups:
        for c in limits:
            if cost > c.max or cost < 0:
                return groups, Verdict(ok=False, charge=c, retry_after_s=None)
    return groups, None


@dataclass(frozen=True, slots=True)
class Usage:
    """What a store holds for one limit: ``used`` units in the window ending now, and ``next_free_in_s``
    (seconds until the oldest of them leaves the window, so one more unit is free; ``None`` when none is used).
    """

    used: float
    next_free_in_s: float | None


def usage_by_check(check: Callable[[Sequence[LimitCharge]], Verdict], charges: Sequence[LimitCharge]) -> list[Usage]:
    """:meth:`Store.usage` for a store that can only ``check``: the largest cost that still fits is ``max - used``."""
    out: list[Usage] = []
    for charge in charges:
        lo, hi = 0, charge.max  # invariant: cost lo fits (0 always does); find the largest that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if check([dataclasses.replace(charge, cost=mid)]).ok:
                lo = mid
            else:
                hi = mid - 1
        used = charge.max - lo
        wait: float | None = None
        if used > 0:  # one unit more than fits: the store says when it will
            wait = check([dataclasses.replace(charge, cost=lo + 1)]).retry_after_s
        out.append(Usage(float(used), wait))
    return out


#: What one append trimmed from one part of a session's memory: (records dropped, bytes dropped).
Trimmed = tuple[int, int]
#: One part of a session's memory as read: (its records, oldest first; how many were ever appended).
Part = tuple[list[str], int]


@runtime_checkable
class StoreProtocol(Protocol):
    """What a third-party store must provide (the built-ins subclass :class:`Store`)."""

    def check(self, charges: Sequence[LimitCharge]) -> Verdict: ...
    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict: ...
    def release(self, charges: Sequence[LimitCharge], token: str) -> None: ...
    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict: ...
    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict: ...
    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None: ...


class Store(ABC):
    """Base of the built-in stores. Subclasses set ``schemes`` to register for
    :func:`~mcp_guard.store_from_uri` (the registry is filled here, as each subclass is defined).

    Semantics every store keeps:
    - sliding windows: in no interval of ``window_s`` are more than ``max`` units admitted;
    - all-or-nothing: a call under several limits is reserved by all or by none;
    - charges with the same ``key`` share one budget; within one call a key is charged once
      (the largest cost among that key's charges) and every limit on it is checked;
    - failures to reach the backend raise :class:`~mcp_guard.StoreError` within a bounded time.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Store]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            Store._registry[scheme] = cls

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str, **options: Any) -> Store: ...

    @abstractmethod
    def check(self, charges: Sequence[LimitCharge]) -> Verdict: ...

    @abstractmethod
    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict: ...

    @abstractmethod
    def release(self, charges: Sequence[LimitCharge], token: str) -> None: ...

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self.check(charges)

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self.reserve(charges)

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        self.release(charges, token)

    def usage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        """Per charge, the units its window holds now and when the next unit frees up. Reads, never changes.

        This default works on any store from :meth:`check` alone (a binary search over the cost, so
        ``log2(max)`` checks per limit); the built-in stores override it with one exact read.
        """
        return usage_by_check(self.check, charges)

    async def ausage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        return self.usage(charges)

    # -- approval grants (spec section 11): a key per grant, with a time to live -----------------------------

    supports_grants: ClassVar[bool] = False
    """Whether :meth:`find_grant`/:meth:`save_grant` work; without them every approval asks again."""

    def find_grant(self, owner: str, digests: Sequence[str]) -> str | None:
        """The id of the first live grant among ``digests`` (all kept under ``owner``), or None."""
        raise NotImplementedError

    def save_grant(self, owner: str, digest: str, grant_id: str, ttl_s: float) -> None:
        """Keep a grant for ``ttl_s`` seconds (replacing one with the same key)."""
        raise NotImplementedError

    async def afind_grant(self, owner: str, digests: Sequence[str]) -> str | None:
        return self.find_grant(owner, digests)

    async def asave_grant(self, owner: str, digest: str, grant_id: str, ttl_s: float) -> None:
        self.save_grant(owner, digest, grant_id, ttl_s)

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to close
        """Release connections. Safe to call twice."""

    async def aclose(self) -> None:
        self.close()

    # -- session memory (spec section 11): bounded logs of opaque records per session -----------------------
    #
    # A session's memory is a few named parts, each a log of text records kept oldest first and bounded in
    # bytes: an append past the bound drops the oldest records and says how many. Each part also counts every
    # record ever appended to it, so a count survives trimming. Stores know nothing of what records mean.
    # Parts of one session live together (one Redis Cluster slot), so a read or an append is one round trip.

    def session_append(
        self, session: str, records: dict[str, list[str]], max_bytes: dict[str, int], ttl_s: float
    ) -> dict[str, Trimmed]:
        """Append ``records`` (part -> records) to ``session``'s memory, each part kept within ``max_bytes[part]``
        (oldest out); the session expires ``ttl_s`` after its last append. Returns what was trimmed, per part."""
        raise NotImplementedError(f"{type(self).__name__} keeps no session memory")

    def session_read(self, session: str, parts: list[str]) -> dict[str, Part]:
        """``session``'s records of each of ``parts`` (oldest first) and how many were ever appended to it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no session memory")

    def session_key(self) -> bytes:
        """The store's own random key for session fingerprints, the same for every client of the store."""
        raise NotImplementedError(f"{type(self).__name__} keeps no session memory")

    async def asession_append(
        self, session: str, records: dict[str, list[str]], max_bytes: dict[str, int], ttl_s: float
    ) -> dict[str, Trimmed]:
        return self.session_append(session, records, max_bytes, ttl_s)

    async def asession_read(self, session: str, parts: list[str]) -> dict[str, Part]:
        return self.session_read(session, parts)

    async def asession_key(self) -> bytes:
        return self.session_key()
