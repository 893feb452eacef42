"""``Inbox``: the approver whose requests wait in a shared store (memory and a real Redis), decided elsewhere.

Every behaviour runs on both stores. The tool in these tests is a plain function that records its calls (the
judge for the Guard's pipeline); the interrupt test at the end calls a real MCP server over stdio.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from mcp_guard import ApprovalRequest, Guard, Inbox, PolicyError
from mcp_guard._inbox.inbox import DecisionRefused, as_request, validate_decision, verify_signature
from tests.support.clock import FakeClock

SECRET = "4111-1111-SECRET-0042"
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "pay": {
            "action": "require_approval",
            "reason": "payments need a human",
            "deny_if": {"args.amount": {"gt": 100}},
            "redact": ["args.card"],
            "args_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
        },
        "note": {"action": "require_approval"},
    },
}


class Till:
    """A tool that records the arguments of every call it receives."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **args: Any) -> str:
        self.calls.append(args)
        return "paid"


async def first_pending(inbox: Inbox, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = await inbox.pending()
        if pending:
            return pending[0]
        await asyncio.sleep(0.01)  # the test stands in for a person looking at the page
    raise AssertionError("no request reached the inbox")


async def guarded_call(guard: Guard, args: dict[str, Any], till: Till, person: Callable[[Inbox], Any], url: str) -> Any:
    """Run ``pay`` through the guard while ``person`` decides through a second Inbox on the same store."""
    page = Inbox(url)  # another process's view: the web page's
    call = asyncio.create_task(guard.ainvoke("pay", args, till, identity="alice", session="s1"))
    await person(page)
    return await asyncio.wait_for(call, 10)


# -- decisions reach the worker ------------------------------------------------------------------------------


async def test_approve_runs_the_call_with_its_own_arguments(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()

    async def approve(page: Inbox) -> None:
        request = await first_pending(page)
        assert request["tool"] == "pay"
        assert request["identity"] == "alice"
        assert request["session"] == "s1"
        assert request["rule"] == "/tools/pay"
        assert request["reason"] == "payments need a human"
        assert request["args"] == {"amount": 5, "card": "[redacted]"}
        assert request["schema"] == POLICY["tools"]["pay"]["args_schema"]  # the rule's args_schema
        assert request["deadline"] == pytest.approx(request["created_at"] + 300.0)
        await page.decide(request["id"], {"type": "approve"})

    assert await guarded_call(guard, {"amount": 5, "card": SECRET}, till, approve, inbox_url) == "paid"
    assert till.calls == [{"amount": 5, "card": SECRET}]
    pending, history = await Inbox(inbox_url).listing()
    assert pending == []
    assert [(h["status"], h["decision"]) for h in history] == [("approved", {"type": "approve"})]


async def test_reject_carries_the_persons_message_to_the_model(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()

    async def reject(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "reject", "message": "not before the audit"})

    result = await guarded_call(guard, {"amount": 5, "card": SECRET}, till, reject, inbox_url)
    assert result["code"] == "approval_denied"
    assert result["reason"] == "not before the audit"
    assert till.calls == []


async def test_an_edit_is_evaluated_again_and_keeps_hidden_values(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()

    async def edit(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "edit", "args": {"amount": 7, "card": "[redacted]"}})

    assert await guarded_call(guard, {"amount": 5, "card": SECRET}, till, edit, inbox_url) == "paid"
    assert till.calls == [{"amount": 7, "card": SECRET}]  # the secret never travelled, yet the call has it

    async def edit_too_far(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "edit", "args": {"amount": 500, "card": "[redacted]"}})

    result = await guarded_call(guard, {"amount": 5, "card": SECRET}, till, edit_too_far, inbox_url)
    assert result["code"] == "denied"  # deny_if amount > 100, on the edited arguments
    assert len(till.calls) == 1


async def test_a_new_value_typed_for_a_hidden_key_is_used_but_never_shown(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()
    other = "5500-0000-OTHER-CARD"

    async def edit(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "edit", "args": {"amount": 5, "card": other}})

    await guarded_call(guard, {"amount": 5, "card": SECRET}, till, edit, inbox_url)
    assert till.calls == [{"amount": 5, "card": other}]
    _, history = await Inbox(inbox_url).listing()
    assert history[0]["decision"] == {"type": "edit", "args": {"amount": 5, "card": "[redacted]"}}
    assert other not in json.dumps(history)


async def test_the_sync_guard_waits_in_the_inbox_too(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()
    page = Inbox(inbox_url)

    def person() -> None:
        async def decide() -> None:
            request = await first_pending(page)
            await page.decide(request["id"], {"type": "approve"})

        asyncio.run(decide())

    thread = threading.Thread(target=person)
    thread.start()
    assert guard.invoke("pay", {"amount": 1, "card": SECRET}, till) == "paid"
    thread.join(10)
    assert till.calls == [{"amount": 1, "card": SECRET}]


# -- once, and on time ---------------------------------------------------------------------------------------


async def test_a_request_is_decided_once_under_a_race(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    rid = await inbox.submit(ApprovalRequest("pay", {"amount": 5, "card": SECRET}))
    decisions = [{"type": "approve"}, {"type": "reject", "message": "no"}] * 5
    outcomes = await asyncio.gather(*(Inbox(inbox_url).decide(rid, d) for d in decisions), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, DecisionRefused)]
    assert len(won) == 1
    assert len(refused) == 9
    assert {r.why for r in refused} == {"decided"}
    assert {r.status for r in refused} == {won[0]["status"]}
    # The worker gets the one decision that won.
    answer = await inbox.wait(rid, 5)
    assert answer is not None
    assert answer["type"] == ("approve" if won[0]["status"] == "approved" else "reject")


async def test_a_decision_wakes_the_worker_at_once(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    rid = await inbox.submit(ApprovalRequest("note", {"text": "hi"}))
    waiter = asyncio.create_task(inbox.wait(rid, 30))
    await asyncio.sleep(0.2)  # the worker is blocked in the store now
    assert not waiter.done()
    decided = time.perf_counter()
    await Inbox(inbox_url).decide(rid, {"type": "approve"})
    assert await waiter == {"type": "approve"}
    assert time.perf_counter() - decided < 0.5  # pushed, not polled for


async def test_a_timed_out_request_expires_and_refuses_a_late_decision(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY), approval_timeout_s=0.3)
    till = Till()
    result = await guard.ainvoke("pay", {"amount": 5, "card": SECRET}, till)
    assert result["code"] == "approval_timeout"
    page = Inbox(inbox_url)
    for _ in range(100):  # the worker marks it expired as it gives up
        pending, history = await page.listing()
        if history:
            break
        await asyncio.sleep(0.01)
    assert pending == []
    assert [h["status"] for h in history] == ["expired"]
    with pytest.raises(DecisionRefused) as refused:
        await page.decide(history[0]["id"], {"type": "approve"})
    assert refused.value.why == "decided"
    assert till.calls == []


async def test_a_dead_workers_request_is_gone_at_its_deadline(inbox_url: str, clock: FakeClock) -> None:
    # Nobody waits for this request (its worker died): past its deadline it is neither listed nor decidable.
    inbox = Inbox(inbox_url, policy=POLICY, clock=clock)
    rid = await inbox.submit(ApprovalRequest("note", {"text": "hi"}), timeout_s=30)
    assert [r["id"] for r in await inbox.pending()] == [rid]
    clock.advance(31)
    assert await inbox.pending() == []
    with pytest.raises(DecisionRefused) as refused:
        await inbox.decide(rid, {"type": "approve"})
    assert refused.value.why == "unknown"
    clock.advance(5)
    assert await inbox.get(rid) is None


@pytest.mark.redis
async def test_redis_keys_live_no_longer_than_the_deadline(redis_url: str) -> None:
    import redis.asyncio as aioredis

    inbox = Inbox(redis_url, policy=POLICY)
    rid = await inbox.submit(ApprovalRequest("note", {"text": "hi"}), timeout_s=30)
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl_ms = await client.pttl(f"mcpg:inbox:req:{rid}")
        assert 29_000 < ttl_ms <= 31_000  # the deadline and a second's grace for its worker to mark it expired
        assert set(await client.keys("*")) == {f"mcpg:inbox:req:{rid}".encode(), b"mcpg:inbox:pending"}
    finally:
        await client.aclose()


async def test_an_unreachable_store_denies_the_call() -> None:
    # Nothing listens on port 1: the approval cannot be asked, so the call is refused (fail closed).
    guard = Guard(POLICY, approver=Inbox("redis://127.0.0.1:1/0", policy=POLICY, timeout_s=0.5))
    till = Till()
    result = await guard.ainvoke("pay", {"amount": 5, "card": SECRET}, till)
    assert result["code"] == "approval_denied"
    assert till.calls == []


# -- redaction -------------------------------------------------------------------------------------------------


async def test_redacted_values_never_reach_the_store(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    request = ApprovalRequest(
        "pay", {"amount": 5, "card": SECRET}, reason=f"card {SECRET} looks odd", description=f"about {SECRET}"
    )
    rid = await inbox.submit(request)
    record = await inbox.get(rid)
    assert record is not None
    assert record["args"] == {"amount": 5, "card": "[redacted]"}
    assert record["hidden"] == ["card"]
    assert record["reason"] == "card [redacted] looks odd"
    dumped = json.dumps([record, await inbox.listing()])
    assert SECRET not in dumped
    assert SECRET[:9] not in dumped
    if inbox_url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(inbox_url)
        try:
            raw = [await client.dump(key) for key in await client.keys("*")]
        finally:
            await client.aclose()
        assert not any(SECRET.encode() in (blob or b"") for blob in raw)


async def test_without_a_policy_every_value_is_hidden(inbox_url: str) -> None:
    rid = await Inbox(inbox_url).submit(ApprovalRequest("pay", {"amount": 5, "card": SECRET}, reason=f"x {SECRET}"))
    record = await Inbox(inbox_url).get(rid)
    assert record is not None
    assert record["args"] == {"amount": "[redacted]", "card": "[redacted]"}
    assert SECRET not in json.dumps(record)


async def test_huge_and_odd_values_are_shown_safely(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    args = {"text": "x" * 100_000, "ratio": float("nan"), "when": object(), "deep": [[[1]]]}
    rid = await inbox.submit(ApprovalRequest("note", args))
    record = await inbox.get(rid)
    assert record is not None
    assert record["args"]["text"] == "[too large to show]"
    assert record["args"]["ratio"] == "nan"
    assert record["args"]["deep"] == [[[1]]]
    assert set(record["hidden"]) == {"text"}


# -- the interrupt helpers ---------------------------------------------------------------------------------------


async def test_submit_is_idempotent_by_request_id_and_wait_returns_the_resume_value(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    payload = {"type": "mcp_guard_approval", "tool": "pay", "args": {"amount": 5, "card": SECRET}, "server": "bank"}
    rid = await inbox.submit(payload, request_id="intr-1", identity="alice")
    assert await inbox.submit(payload, request_id="intr-1") == "intr-1"
    assert [r["id"] for r in await inbox.pending()] == ["intr-1"]
    assert await inbox.wait(rid, 0.05) is None  # nobody has decided yet; it stays pending
    await Inbox(inbox_url).decide(rid, {"type": "edit", "args": {"amount": 3, "card": "[redacted]"}})
    assert await inbox.wait(rid, 5) == {"type": "edit", "args": {"amount": 3, "card": SECRET}}


def test_sync_helpers_inside_and_outside_an_event_loop(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY)
    rid = inbox.submit_sync(ApprovalRequest("note", {"text": "hi"}))
    inbox.decide_sync(rid, {"type": "reject", "message": "later"})
    assert inbox.wait_sync(rid, 5) == {"type": "reject", "message": "later"}

    async def from_a_loop() -> dict[str, Any] | None:
        other = inbox.submit_sync(ApprovalRequest("note", {"text": "again"}))
        inbox.decide_sync(other, {"type": "approve"})
        return inbox.wait_sync(other, 5)

    assert asyncio.run(from_a_loop()) == {"type": "approve"}


def test_as_request_reads_each_pause_shape() -> None:
    class ToolApprovalItem:  # the Agents SDK's shape: a name and the arguments as JSON text
        name = "pay"
        arguments = '{"amount": 5}'

    assert as_request(ToolApprovalItem()).args == {"amount": 5}
    assert as_request({"tool": "pay", "args": {"a": 1}, "rule": "/tools/pay"}, identity="bob").identity == "bob"
    with pytest.raises(TypeError):
        as_request(42)
    with pytest.raises(ValueError, match="tool"):
        as_request({"args": {}})


# -- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({}, "'type'"),
        ({"type": "maybe"}, "'type'"),
        ({"type": "edit"}, "'args'"),
        ({"type": "edit", "args": [1]}, "'args'"),
        ({"type": "reject", "message": 3}, "'message'"),
    ],
)
def test_malformed_decisions_are_refused(body: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_decision(body)


def test_reject_messages_are_trimmed_and_bounded() -> None:
    assert validate_decision({"type": "reject", "message": "  "}) == {"type": "reject"}
    assert len(validate_decision({"type": "reject", "message": "x" * 10_000})["message"]) == 2_000


async def test_unknown_requests_are_refused(inbox_url: str) -> None:
    inbox = Inbox(inbox_url)
    for rid in ("nope", "../../etc", "x" * 200):
        with pytest.raises(DecisionRefused):
            await inbox.decide(rid, {"type": "approve"})
        assert await inbox.get(rid) is None
    assert await inbox.wait("nope", 0.01) is None
    with pytest.raises(ValueError, match="request_id"):
        await inbox.submit(ApprovalRequest("note", {}), request_id="a b")


def test_configuration_errors() -> None:
    with pytest.raises(PolicyError, match="memory:// or redis://"):
        Inbox("sqlite:///x")
    with pytest.raises(ValueError, match="webhook_secret"):
        Inbox("memory://", webhook="http://127.0.0.1:1/hook")
    with pytest.raises(ValueError, match="http"):
        Inbox("memory://", webhook="file:///etc/passwd", webhook_secret="k")
    assert "secret" not in repr(Inbox("redis://:secret@127.0.0.1:6379/0"))


# -- webhook ---------------------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback that keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str | None]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((body, self.headers.get("X-MCP-Guard-Signature")))
                outer.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


async def test_webhook_posts_each_new_request_signed(inbox_url: str, receiver: Receiver) -> None:
    inbox = Inbox(inbox_url, policy=POLICY, webhook=receiver.url, webhook_secret="hook-secret")
    guard = Guard(POLICY, approver=inbox)
    till = Till()

    async def receiver_decides(page: Inbox) -> None:
        assert await asyncio.to_thread(receiver.arrived.wait, 10)
        body, signature = receiver.received[0]
        assert verify_signature(body, signature, "hook-secret")
        assert not verify_signature(body, signature, "other-secret")
        assert not verify_signature(body + b" ", signature, "hook-secret")
        sent = json.loads(body)
        assert sent["event"] == "approval_requested"
        assert sent["request"]["args"] == {"amount": 5, "card": "[redacted]"}
        assert SECRET.encode() not in body
        await page.decide(sent["request"]["id"], {"type": "approve"})

    assert await guarded_call(guard, {"amount": 5, "card": SECRET}, till, receiver_decides, inbox_url) == "paid"
    assert len(receiver.received) == 1


async def test_a_failing_webhook_never_fails_the_call(inbox_url: str) -> None:
    inbox = Inbox(inbox_url, policy=POLICY, webhook="http://127.0.0.1:9/unreachable", webhook_secret="k")
    guard = Guard(POLICY, approver=inbox)
    till = Till()

    async def approve(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "approve"})

    assert await guarded_call(guard, {"amount": 5, "card": SECRET}, till, approve, inbox_url) == "paid"


# -- grants: a person's yes for later identical calls (spec section 11) ---------------------------------------


async def test_a_session_grant_from_the_page_is_not_asked_again(inbox_url: str) -> None:
    guard = Guard(POLICY, approver=Inbox(inbox_url, policy=POLICY))
    till = Till()

    async def approve_for_the_session(page: Inbox) -> None:
        request = await first_pending(page)
        await page.decide(request["id"], {"type": "approve", "scope": "session"})

    args = {"amount": 5, "card": SECRET}
    assert await guarded_call(guard, args, till, approve_for_the_session, inbox_url) == "paid"
    # The same call in the same session: answered by the grant, no request reaches the inbox.
    assert await asyncio.wait_for(guard.ainvoke("pay", args, till, identity="alice", session="s1"), 10) == "paid"
    assert till.calls == [args, args]
    pending, history = await Inbox(inbox_url).listing()
    assert pending == []
    assert len(history) == 1


def test_a_decision_with_a_bad_scope_or_ttl_is_refused() -> None:
    assert validate_decision({"type": "approve", "scope": "session"}) == {"type": "approve", "scope": "session"}
    assert validate_decision({"type": "approve", "ttl_s": 3600}) == {"type": "approve", "ttl_s": 3600.0}
    for bad in (
        {"type": "approve", "scope": "forever"},
        {"type": "approve", "ttl_s": 0},
        {"type": "approve", "ttl_s": float("inf")},
        {"type": "approve", "ttl_s": True},
        {"type": "approve", "args": {"amount": 1}},
    ):
        with pytest.raises(ValueError, match=r"scope|ttl_s|args"):
            validate_decision(bad)
