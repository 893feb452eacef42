"""The I/O a pipeline step can ask for, and what one call carries from step to step.

The steps (:mod:`mcp_guard._guard.pipeline`, :mod:`mcp_guard._guard.shadow`) are generators that *yield* one of these
actions and are sent back its result (or have its exception thrown in); a sync and an async driver perform
them (tenacity's ``DoAttempt``/``DoSleep`` design). So the logic of a call is written once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp_guard._calls.approval import ApprovalDecision, ApprovalRequest
from mcp_guard._policy.decision import Decision, LimitCharge
from mcp_guard._policy.policy import Policy

T = TypeVar("T")

# The actions are made per step of every call, so they are plain slotted dataclasses, not frozen ones: a frozen
# dataclass sets each field through object.__setattr__, about twice the cost. Nothing changes them once made.


@dataclass(slots=True)
class Check:
    """Ask the store whether ``charges`` fit, reserving nothing (answer: a Verdict)."""

    charges: tuple[LimitCharge, ...]


@dataclass(slots=True)
class Reserve:
    """Reserve ``charges`` atomically (answer: a Verdict with a token when they fit)."""

    charges: tuple[LimitCharge, ...]


@dataclass(slots=True)
class Release:
    """Give back ``charges`` reserved under ``token`` (answer: None)."""

    charges: tuple[LimitCharge, ...]
    token: str


@dataclass(slots=True)
class Recall:
    """Read ``parts`` of ``session``'s memory (answer: part -> (records, appended ever))."""

    session: str
    parts: list[str]


@dataclass(slots=True)
class Remember:
    """Append ``records`` (part -> records) to ``session``'s memory (answer: part -> (dropped, dropped bytes))."""

    session: str
    records: dict[str, list[str]]
    caps: dict[str, int]
    ttl_s: float


@dataclass(slots=True)
class SessionKey:
    """The store's key for session fingerprints (answer: bytes)."""


@dataclass(slots=True)
class Call:
    """Call the tool: ``fn(**args)`` (answer: its value; its exception is thrown in)."""

    fn: Callable[..., Any]
    args: Mapping[str, Any]


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the guard's approver, for at most ``timeout_s`` (None: no bound; answer: an :class:`Answer`, never an
    exception)."""

    request: ApprovalRequest
    timeout_s: float | None
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """What asking the approver came to: a decision, or the code of why there is none."""

    decision: ApprovalDecision | None = None
    code: Literal["approval_timeout", "approval_denied"] | None = None
    reason: str | None = None


@dataclass(slots=True)
class FindGrant:
    """Look up an approval grant among ``digests`` under ``owner`` (answer: its id, or None)."""

    owner: str
    digests: list[str]


@dataclass(slots=True)
class SaveGrant:
    """Keep an approval grant for ``ttl_s`` seconds (answer: None)."""

    owner: str
    digest: str
    grant_id: str
    ttl_s: float


Op = Check | Reserve | Release | Ask | Call | Sleep | Recall | Remember | SessionKey | FindGrant | SaveGrant
StoreOp = Check | Reserve | Release | Recall | Remember | SessionKey | FindGrant | SaveGrant
Steps = Generator[Op, Any, T]


@dataclass(slots=True)
class AttemptState:
    """What one call carries across its steps (and across rate-limit waits, so a human is asked at most once)."""

    approval: ApprovalDecision | None = None
    started: float = field(default_factory=time.perf_counter)
    held: tuple[tuple[LimitCharge, ...], str] | None = None
    """Quota reserved and not yet handed to an admission (held while a human is asked)."""
    decision: Decision | None = None
    """The last decision taken, for the event of a call cancelled midway."""
    policy: Policy | None = None
    """The policy this call is decided by, taken once at its start: a reload mid-call does not change it."""
    recorded: bool = False
    """The call's one event has been written by the steps (an abort before the tool was handed the call)."""
    called: bool = False
    """The tool has been called (at least once): from here on an exception is the tool's, not the guard's."""
    view: Any = None
    """The session view this call is decided on (read once, before the first evaluation), or None."""


__all__ = [
    "Answer",
    "Ask",
    "AttemptState",
    "Call",
    "Check",
    "FindGrant",
    "Op",
    "Recall",
    "Release",
    "Remember",
    "Reserve",
    "SaveGrant",
    "SessionKey",
    "Sleep",
    "Steps",
    "StoreOp",
]
