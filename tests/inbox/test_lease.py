"""No decision for a caller who has left (spec section 10): the inbox's worker lease.

A worker waiting on an inbox request renews a lease on it. When the worker is gone (killed with SIGKILL, frozen,
its task cancelled) the request is shown as ``abandoned`` or ``withdrawn`` within seconds, and a decision for it
is refused (HTTP 410) instead of being answered "the worker has it". An interrupt's pause, which no worker waits
on while it is paused, has no lease and stays decidable.

Judged at the far side: the raw Redis hash, a second ``Inbox`` on the same store (the page's view), the web app's
JSON API (the page reads it), and the tool's own record of what ran. Never the worker's own view.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mcp_guard import ApprovalRequest, Guard, Inbox
from mcp_guard._inbox.inbox import DecisionRefused
from mcp_guard._inbox.web import create_app
from tests.inbox.test_browser import Worker
from tests.inbox.test_inbox import POLICY, SECRET, Till, first_pending
from tests.support.clock import FakeClock
from tests.support.servers.inbox_recording_server import read_record

TOKEN = "lease-test-token-" + "x" * 16
BEARER = {"authorization": f"Bearer {TOKEN}"}
#: The process test's lease: short, so that a kill shows within a couple of seconds.
LEASE_OPTIONS = {"lease_s": 1.0, "lease_renew_s": 0.2}
#: The in-process tests' lease, on a fake clock: the clock moves, renewals run on real time as often as they can.
LEASE_S = 5.0
RENEW_S = 0.02


def poll(what: Callable[[], Any], timeout_s: float, step_s: float = 0.02) -> Any:
    """``what()`` once it is truthy; a bounded poll (a person refreshing the page), never a sleep for a window."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)


async def apoll(what: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await what()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.01)


def page_client(url: str, clock: Callable[[], float] = time.time) -> TestClient:
    """The inbox's web app on ``url`` (what ``mcp-guard inbox`` serves), as the page and a bot talk to it."""
    return TestClient(create_app(Inbox(url, clock=clock), token=TOKEN))


def post_decision(client: TestClient, rid: str, decision: dict[str, Any]) -> Any:
    return client.post(
        f"/api/requests/{rid}/decision",
        content=json.dumps(decision),
        headers={**BEARER, "content-type": "application/json"},
    )


def listed(client: TestClient, rid: str) -> tuple[str, dict[str, Any]] | None:
    """Where the page's list shows ``rid`` (``"pending"`` or ``"history"``) and its record."""
    body = client.get("/api/requests", headers=BEARER).json()
    for where in ("pending", "history"):
        for record in body[where]:
            if record["id"] == rid:
                return where, record
    return None


def raw_status(redis_url: str, rid: str) -> str | None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        status: str | None = client.hget(f"mcpg:inbox:req:{rid}", "status")
        return status
    finally:
        client.close()


# -- a worker process killed with SIGKILL ----------------------------------------------------------------------


@pytest.mark.redis
def test_a_killed_workers_request_is_abandoned_within_seconds(redis_url: str, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    order = {"symbol": "BTCUSD", "amount": 250, "account": "acct-1", "note": "rebalance"}
    worker = Worker(redis_url, record, "alice", order, LEASE_OPTIONS)
    try:
        with page_client(redis_url) as page:
            worker.wait_for("ready")
            body = poll(lambda: page.get("/api/requests", headers=BEARER).json()["pending"], 60)
            assert body, "the worker's request never reached the inbox"
            (request,) = body
            rid = request["id"]
            assert request["lease_until"] is not None

            worker.proc.send_signal(signal.SIGKILL)  # no finally block, no goodbye: only the lease can tell
            worker.proc.wait(10)
            killed = time.monotonic()
            seen = poll(lambda: (listed(page, rid) or ("", {}))[0] == "history", 10)
            after_s = time.monotonic() - killed
            print(f"\nkilled worker's request abandoned after {after_s:.2f} s (lease {LEASE_OPTIONS['lease_s']} s)")
            assert seen, "the killed worker's request is still offered for a decision"
            where, shown = listed(page, rid) or ("", {})
            assert (where, shown["status"]) == ("history", "abandoned")
            assert after_s < LEASE_OPTIONS["lease_s"] + 2
            assert raw_status(redis_url, rid) == "abandoned"  # the store itself, not the app's view

            refused = post_decision(page, rid, {"type": "approve"})
            assert refused.status_code == 410
            assert refused.json()["status"] == "abandoned"
            assert "the caller left" in refused.json()["error"]
            assert raw_status(redis_url, rid) == "abandoned"
    finally:
        worker.stop()
    assert read_record(record) == []  # nothing ran


# -- a worker frozen in process: abandoned, and told so when it wakes --------------------------------------------


class LoopWorker:
    """A guarded call on an event loop of its own thread, which the test can freeze (a stalled or dead worker)."""

    def __init__(self, guard: Guard, args: dict[str, Any], till: Till) -> None:
        self.loop = asyncio.new_event_loop()
        self.result: Any = None
        self._gate = threading.Event()
        self._frozen = threading.Event()

        def run() -> None:
            try:
                self.result = self.loop.run_until_complete(guard.ainvoke("pay", args, till, identity="alice"))
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def freeze(self) -> None:
        def block() -> None:
            self._frozen.set()
            self._gate.wait(30)

        self.loop.call_soon_threadsafe(block)
        assert self._frozen.wait(10)

    def thaw(self) -> Any:
        self._gate.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.result


@pytest.fixture
def workers() -> Iterator[list[LoopWorker]]:
    made: list[LoopWorker] = []
    yield made
    for worker in made:
        worker.thaw()


async def test_a_live_worker_keeps_its_request_past_many_lease_lengths(
    inbox_url: str,
    clock: FakeClock,
    workers: list[LoopWorker],
) -> None:
    inbox = Inbox(inbox_url, policy=POLICY, clock=clock, lease_s=LEASE_S, lease_renew_s=RENEW_S)
    till = Till()
    workers.append(LoopWorker(Guard(POLICY, approver=inbox), {"amount": 5, "card": SECRET}, till))
    page = Inbox(inbox_url, clock=clock)
    rid = (await first_pending(page))["id"]
    for _ in range(6):  # 18 s of the lease's clock: each step is within the lease, and renewed before the next
        clock.advance(LEASE_S * 0.6)
        target = clock() + LEASE_S

        async def renewed(target: float = target) -> bool:
            record = await page.get(rid)
            return record is not None and record["lease_until"] == target

        assert await apoll(renewed), "the waiting worker did not renew its lease"
    assert [r["id"] for r in await page.pending()] == [rid]
    await page.decide(rid, {"type": "approve"})
    assert workers.pop().thaw() == "paid"
    assert till.calls == [{"amount": 5, "card": SECRET}]


async def test_a_frozen_workers_request_is_abandoned_and_the_worker_never_runs_it(
    inbox_url: str,
    clock: FakeClock,
    workers: list[LoopWorker],
) -> None:
    inbox = Inbox(inbox_url, policy=POLICY, clock=clock, lease_s=LEASE_S, lease_renew_s=RENEW_S)
    till = Till()
    worker = LoopWorker(Guard(POLICY, approver=inbox), {"amount": 5, "card": SECRET}, till)
    workers.append(worker)
    page = Inbox(inbox_url, clock=clock)
    rid = (await first_pending(page))["id"]

    worker.freeze()  # its loop runs nothing now: no renewal, no cleanup
    clock.advance(LEASE_S - 0.01)
    assert [r["id"] for r in await page.pending()] == [rid]  # within its lease: still offered
    clock.advance(0.02)
    pending, history = await page.listing()
    assert pending == []
    assert [(h["id"], h["status"]) for h in history] == [(rid, "abandoned")]
    with pytest.raises(DecisionRefused) as refused:
        await page.decide(rid, {"type": "approve"})
    assert (refused.value.why, refused.value.status) == ("left", "abandoned")
    with page_client(inbox_url, clock) as client:
        where, shown = listed(client, rid) or ("", {})
        assert (where, shown["status"]) == ("history", "abandoned")
        answer = post_decision(client, rid, {"type": "approve"})
        assert answer.status_code == 410
        assert answer.json()["status"] == "abandoned"
    if inbox_url.startswith("redis"):
        assert raw_status(inbox_url, rid) == "abandoned"

    # The worker wakes: its lease ran out, so it gets no decision and the call is refused; the tool never runs.
    result = workers.pop().thaw()
    assert result["code"] == "approval_denied"
    assert till.calls == []
    assert (await page.get(rid) or {})["status"] == "abandoned"


# -- a cancelled waiter ----------------------------------------------------------------------------------------


async def test_a_cancelled_waiter_withdraws_its_request_at_once(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()
    call = asyncio.create_task(guard.ainvoke("pay", {"amount": 5, "card": SECRET}, till))
    page = Inbox(inbox_url)
    rid = (await first_pending(page))["id"]
    call.cancel()  # the caller left (a client's cancel, a closed connection, a run torn down)
    with pytest.raises(asyncio.CancelledError):
        await call

    async def settled() -> str | None:
        record = await page.get(rid)
        return None if record is None or record["status"] == "pending" else record["status"]

    assert await apoll(settled, 5) == "withdrawn"  # on the worker's way out, not after a lease
    pending, history = await page.listing()
    assert pending == []
    assert [(h["id"], h["status"]) for h in history] == [(rid, "withdrawn")]
    with pytest.raises(DecisionRefused) as refused:
        await page.decide(rid, {"type": "approve"})
    assert (refused.value.why, refused.value.status) == ("left", "withdrawn")
    with page_client(inbox_url) as client:
        answer = post_decision(client, rid, {"type": "approve"})
    assert answer.status_code == 410
    assert answer.json()["status"] == "withdrawn"
    if inbox_url.startswith("redis"):
        assert raw_status(inbox_url, rid) == "withdrawn"
    assert till.calls == []


async def test_the_guards_own_timeout_still_expires_the_request(inbox_url: str) -> None:
    # The guard cancels the inbox at its approval timeout too: that is an expiry (409), not a caller leaving.
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY), approval_timeout_s=0.4)
    result = await guard.ainvoke("pay", {"amount": 5, "card": SECRET}, Till())
    assert result["code"] == "approval_timeout"
    page = Inbox(inbox_url)

    async def history() -> list[str]:
        return [h["status"] for h in (await page.listing())[1]]

    assert await apoll(history) == ["expired"]


# -- interrupts: no worker waits while the run is paused ----------------------------------------------------------


async def test_an_interrupt_pause_has_no_lease_and_stays_decidable(
    inbox_url: str,
    clock: FakeClock,
) -> None:
    inbox = Inbox(inbox_url, policy=POLICY, clock=clock, lease_s=1.0, lease_renew_s=0.5)
    payload = {"type": "mcp_guard_approval", "tool": "pay", "args": {"amount": 5, "card": SECRET}, "server": "bank"}
    rid = await inbox.submit(payload, request_id="intr-1", identity="alice", timeout_s=300)
    assert (await inbox.get(rid) or {})["lease_until"] is None
    clock.advance(120)  # 120 lease lengths, nobody renewing
    assert [r["id"] for r in await inbox.pending()] == [rid]
    # A waiter that gives up, or is cancelled, leaves the pause as it was: the run resumes elsewhere later.
    assert await inbox.wait(rid, 0.05) is None
    waiter = asyncio.create_task(inbox.wait(rid, 30))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert [r["id"] for r in await Inbox(inbox_url, clock=clock).pending()] == [rid]
    await Inbox(inbox_url, clock=clock).decide(rid, {"type": "approve"})
    assert await inbox.wait(rid, 5) == {"type": "approve"}


# -- options --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"lease_s": 0},
        {"lease_s": 1, "lease_renew_s": 1},
        {"lease_s": 1, "lease_renew_s": 2},
        {"lease_renew_s": 0},
        {"lease_s": float("nan")},
        {"lease_s": float("inf")},
    ],
)
def test_a_lease_is_renewed_before_it_runs_out(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="lease"):
        Inbox("memory://", **options)


def test_a_submitted_request_by_hand_is_not_leased() -> None:
    # submit_sync is the interrupt helper: no lease (the approver path leases; see the tests above).
    inbox = Inbox("memory://lease-by-hand", policy=POLICY)
    rid = inbox.submit_sync(ApprovalRequest("note", {"text": "hi"}))
    assert inbox.decide_sync(rid, {"type": "approve"})["lease_until"] is None
