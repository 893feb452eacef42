"""The inbox page in a real browser (Playwright driving Debian's chromium) against two worker processes.

Two workers, each a LangChain agent in its own process with a guarded MCP tool on a real stdio server, wait in
one Redis inbox. A person (the test, through the page) approves one and edits the other into arguments the
policy refuses. The judge is the recording server: only the approved order reached it. The click-to-resume
latency is measured and printed; a screenshot of the page with both requests is saved as inbox.png in the
test's own temporary folder, or in the folder named by MCP_GUARD_SCREENSHOTS (never a fixed shared path). A
second test kills the workers (SIGKILL) and sees their cards greyed as "the caller left": once through the
inbox's answer, once by the page alone after its server stopped too (as the demo's does when its worker exits).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Inbox
from mcp_guard._inbox.web import InboxServer, create_app
from tests.support.servers.inbox_recording_server import read_record

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
#: Run as ``python -m tests.support.inbox_worker`` from the repository root, so its ``tests.support`` imports resolve.
WORKER = "tests.support.inbox_worker"
#: The workers' lease in the second test: short, so the page sees a killed worker within a couple of seconds.
SHORT_LEASE = {"lease_s": 1.0, "lease_renew_s": 0.2}
SECRET_ACCOUNT = "acct-7F3Q-SECRET-91"
SCRIPT_NOTE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

pytestmark = pytest.mark.redis


def _need_browser() -> Any:
    problem = None
    if not os.path.exists(CHROMIUM):
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            problem = "the playwright package is not installed (pip install playwright)"
        else:
            return sync_playwright
    message = f"{problem}; the inbox browser test needs it"
    if os.environ.get("MCP_GUARD_REQUIRE_REDIS") == "1":
        pytest.fail(message + " and MCP_GUARD_REQUIRE_REDIS=1")
    pytest.skip(message)


class Worker:
    """One worker process; its JSON lines are read by a thread as they come."""

    def __init__(
        self, redis_url: str, record: Path, identity: str, args: dict[str, Any], options: dict[str, Any] | None = None
    ) -> None:
        self.identity = identity
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.ended = False
        extra = [json.dumps(options)] if options is not None else []  # the worker's Inbox options
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, redis_url, str(record), identity, json.dumps(args), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def wait_for(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for event in self.events:
                    if event["event"] == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    break
                self._cond.wait(left)
        if self.proc.poll() is None:
            self.proc.kill()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"worker {self.identity}: no {name!r} event; got {self.events}\n{err[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_playwright = _need_browser()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_two_workers_decided_on_the_page(browser: Any, redis_url: str, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    token = secrets.token_urlsafe(24)
    order_a = {"symbol": "BTCUSD", "amount": 250, "account": SECRET_ACCOUNT, "note": "rebalance"}
    order_b = {"symbol": "ETHUSD", "amount": 40, "account": SECRET_ACCOUNT, "note": SCRIPT_NOTE}
    workers = [Worker(redis_url, record, "alice", order_a), Worker(redis_url, record, "bob", order_b)]
    try:
        with InboxServer(create_app(Inbox(redis_url), token=token, poll_s=0.25)) as server:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(f"{server.url}/?token={token}")
            assert page.url == f"{server.url}/", "the token is taken out of the address bar"

            cards = page.locator("article.card")
            cards.nth(1).wait_for(timeout=60_000)  # both workers are waiting in the inbox
            assert cards.count() == 2
            card_a = page.locator("article.card", has_text="alice")
            card_b = page.locator("article.card", has_text="bob")
            assert card_a.locator("[data-role=tool]").text_content() == "place_order"
            assert "orders need a human's approval" in card_a.text_content()
            # The tool's MCP schema is shown beside the edit box.
            assert '"amount"' in card_b.locator("[data-role=schema]").text_content()

            # A model-supplied <script> is shown as text: present in the DOM text, never parsed, never run.
            assert json.dumps(SCRIPT_NOTE) in card_b.locator("[data-role=args]").text_content()
            assert page.locator("article.card script, article.card img").count() == 0
            assert page.evaluate("window.__pwned") is None
            # The redacted account is never on the page, in any form.
            html = page.content()
            assert SECRET_ACCOUNT not in html
            assert "[redacted]" in card_a.locator("[data-role=args]").text_content()

            shot = Path(os.environ.get("MCP_GUARD_SCREENSHOTS") or tmp_path) / "inbox.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")

            # Approve alice's order; measure from the click to her worker holding the decision.
            clicked = time.time()
            card_a.locator("[data-action=approve]").click()
            resumed = workers[0].wait_for("resumed")
            latency_s = resumed["t"] - clicked
            print(f"\ninbox click-to-resume latency: {latency_s * 1000:.0f} ms")
            assert resumed["kind"] == "approve"
            assert latency_s < 1.0

            # Edit bob's order into one the policy refuses (over 1,000 USD); the account stays as shown.
            card_b.locator("[data-action=edit]").click()
            edited = {"symbol": "ETHUSD", "amount": 5000, "account": "[redacted]", "note": "bigger"}
            card_b.locator("textarea[name=args]").fill(json.dumps(edited))
            clicked = time.time()
            card_b.locator("[data-action=save-edit]").click()
            resumed_b = workers[1].wait_for("resumed")
            print(f"inbox click-to-resume latency (edit): {(resumed_b['t'] - clicked) * 1000:.0f} ms")
            assert resumed_b["kind"] == "edit"

            done_a, done_b = workers[0].wait_for("done"), workers[1].wait_for("done")
            assert done_a["status"] == "success"
            assert done_a["text"] == "order placed: 250 USD of BTCUSD"
            violation = json.loads(done_b["text"])
            assert done_b["status"] == "error"
            assert violation["code"] == "denied"  # the edit was evaluated again

            # Both move to the history; the page never showed the account.
            page.locator("#history li").nth(1).wait_for(timeout=10_000)
            assert page.locator("article.card").count() == 0
            statuses = sorted(page.locator("#history .status").all_text_contents())
            assert statuses == ["approved", "edited"]
            page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
            assert SECRET_ACCOUNT not in page.content()
            assert page.evaluate("window.__pwned") is None
    finally:
        for worker in workers:
            worker.stop()

    # The judge: only alice's approved order reached the server, with her real account.
    assert read_record(record) == [{"tool": "place_order", "args": order_a}]


def test_a_caller_who_left_is_greyed_and_cannot_be_approved(browser: Any, redis_url: str, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    token = secrets.token_urlsafe(24)
    order = {"symbol": "BTCUSD", "amount": 10, "account": SECRET_ACCOUNT, "note": "n"}
    workers = [Worker(redis_url, record, who, order, SHORT_LEASE) for who in ("alice", "bob")]
    server = InboxServer(create_app(Inbox(redis_url), token=token, poll_s=0.25)).start()
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 1200})
        page.goto(f"{server.url}/?token={token}")
        page.locator("article.card").nth(1).wait_for(timeout=60_000)
        card_a = page.locator("article.card", has_text="alice")
        card_b = page.locator("article.card", has_text="bob")

        # alice's worker is killed while the inbox is up: within its lease the page shows she left.
        workers[0].stop()
        page.locator("article.card.left", has_text="alice").wait_for(timeout=10_000)
        assert "the caller left" in card_a.text_content()
        assert card_a.locator("[data-action=approve]").is_disabled()
        assert not card_a.locator("[data-action=approve]").is_visible()  # only Dismiss is offered
        assert card_a.locator("[data-action=dismiss]").is_visible()
        assert page.locator("#history li.abandoned", has_text="the caller left").count() == 1
        assert page.locator("#history .status").all_text_contents() == ["abandoned"]
        assert not card_b.locator("[data-action=approve]").is_disabled()  # bob still waits

        # The inbox's server stops and bob's worker exits with it (the demo): the page can ask nobody, and
        # greys bob's card once his lease has run out by its own clock.
        server.stop()
        workers[1].stop()
        page.locator("article.card.left", has_text="bob").wait_for(timeout=10_000)
        assert "the caller left" in card_b.text_content()
        assert "unreachable" in card_b.text_content()
        assert card_b.locator("[data-action=approve]").is_disabled()
        assert "cannot reach the inbox" in page.locator("#connection").text_content()
        assert page.locator("#pending-count").text_content() == "0"
        page.screenshot(path=str(tmp_path / "left.png"), full_page=True)

        card_a.locator("[data-action=dismiss]").click()
        assert page.locator("article.card", has_text="alice").count() == 0
    finally:
        server.stop()
        for worker in workers:
            worker.stop()
    assert read_record(record) == []  # nothing ran
