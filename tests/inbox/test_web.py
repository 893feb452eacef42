"""The inbox's web app and ``mcp-guard inbox``: the token on every route, same-origin JSON for decisions, one
decision per request, nothing redacted in any answer, and the command itself serving a Redis inbox.

Requests go through Starlette's TestClient (the real ASGI app); the browser test is ``tests/inbox/test_browser.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from mcp_guard import ApprovalRequest, Inbox
from mcp_guard._cli.main import main
from mcp_guard._inbox.web import COOKIE, cookie_value, create_app
from mcp_guard._install import install_hint
from tests.support.servers.proxy_support import free_port

TOKEN = "inbox-token-" + "x" * 20
SECRET = "sk-live-DO-NOT-SHOW-1234"
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {"deploy": {"action": "require_approval", "redact": ["args.api_key"]}},
}
SAME_ORIGIN = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}
COOKIE_HEADER = {"cookie": f"{COOKIE}={cookie_value(TOKEN)}"}


@pytest.fixture
def inbox() -> Inbox:
    return Inbox(f"memory://web-{uuid.uuid4().hex}", policy=POLICY)


@pytest.fixture
def client(inbox: Inbox) -> Iterator[TestClient]:
    with TestClient(create_app(inbox, token=TOKEN), follow_redirects=False) as made:
        yield made


@pytest.fixture
def rid(inbox: Inbox) -> str:
    return inbox.submit_sync(ApprovalRequest("deploy", {"service": "api", "api_key": SECRET}, identity="alice"))


def decide(client: TestClient, rid: str, body: Any, **headers: str) -> Any:
    return client.post(
        f"/api/requests/{rid}/decision",
        content=json.dumps(body),
        headers={"content-type": "application/json", **COOKIE_HEADER, **SAME_ORIGIN, **headers},
    )


ROUTES = [
    ("GET", "/"),
    ("GET", "/static/inbox.js"),
    ("GET", "/static/inbox.css"),
    ("GET", "/api/requests"),
    ("GET", "/api/requests/{rid}"),
    ("POST", "/api/requests/{rid}/decision"),
    ("GET", "/no/such/page"),
]
NO_TOKEN: list[dict[str, str]] = [
    {},
    {"cookie": f"{COOKIE}=wrong-token-wrong-token"},
    {"cookie": f"{COOKIE}={cookie_value(TOKEN)[:-1]}"},
    {"cookie": f"{COOKIE}={TOKEN}"},  # the token itself is not the cookie
    {"authorization": "Bearer wrong-token-wrong-token"},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": f"Bearer {TOKEN}x"},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers", NO_TOKEN, ids=["none", "cookie", "cookie-prefix", "raw-token-cookie", "bearer", "basic", "longer"]
)
def test_every_route_needs_the_token(
    client: TestClient, inbox: Inbox, rid: str, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(
        method,
        path.format(rid=rid),
        headers={**headers, **SAME_ORIGIN, "content-type": "application/json"},
        content=b'{"type": "approve"}' if method == "POST" else None,
    )
    assert response.status_code == 401
    assert SECRET not in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert [r["id"] for r in inbox.listing_sync()[0]] == [rid]  # nothing was decided


def test_a_wrong_token_in_the_address_is_refused(client: TestClient) -> None:
    response = client.get("/?token=not-the-token-at-all")
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_url(client: TestClient) -> None:
    response = client.get(f"/?token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={cookie_value(TOKEN)};")
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    page = client.get("/", headers=COOKIE_HEADER)
    assert page.status_code == 200
    assert '<script src="/static/inbox.js" defer></script>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_api_clients_use_the_bearer_header(client: TestClient, inbox: Inbox, rid: str) -> None:
    bearer = {"authorization": f"Bearer {TOKEN}"}
    listed = client.get("/api/requests", headers=bearer).json()
    assert [r["id"] for r in listed["pending"]] == [rid]
    # A webhook receiver is not a browser: no Origin, no Sec-Fetch-Site, the bearer alone.
    response = client.post(f"/api/requests/{rid}/decision", json={"type": "approve"}, headers=bearer)
    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    assert inbox.wait_sync(rid, 1) == {"type": "approve"}


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
        {"origin": "http://evil.example"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://sub.testserver"},
    ],
    ids=["cross-site", "origin", "look-alike", "null-origin", "fetch-site", "same-site"],
)
def test_cross_site_posts_are_refused(client: TestClient, inbox: Inbox, rid: str, headers: dict[str, str]) -> None:
    response = client.post(
        f"/api/requests/{rid}/decision",
        content=b'{"type": "approve"}',
        headers={"content-type": "application/json", **COOKIE_HEADER, **headers},
    )
    assert response.status_code == 403
    assert [r["id"] for r in inbox.listing_sync()[0]] == [rid]


def test_a_cookie_post_without_origin_evidence_is_refused(client: TestClient, inbox: Inbox, rid: str) -> None:
    response = client.post(
        f"/api/requests/{rid}/decision",
        content=b'{"type": "approve"}',
        headers={"content-type": "application/json", **COOKIE_HEADER},
    )
    assert response.status_code == 403
    assert [r["id"] for r in inbox.listing_sync()[0]] == [rid]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"type=approve"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="type"\r\n\r\napprove\r\n--x--',
        ),
        ("text/plain", b'{"type": "approve"}'),
    ],
)
def test_form_posts_are_refused_even_from_the_same_origin(
    client: TestClient, inbox: Inbox, rid: str, content_type: str, body: bytes
) -> None:
    response = client.post(
        f"/api/requests/{rid}/decision",
        content=body,
        headers={"content-type": content_type, **COOKIE_HEADER, **SAME_ORIGIN},
    )
    assert response.status_code == 415
    assert [r["id"] for r in inbox.listing_sync()[0]] == [rid]


def test_a_second_decision_is_refused(client: TestClient, inbox: Inbox, rid: str) -> None:
    first = decide(client, rid, {"type": "reject", "message": "no"})
    assert first.status_code == 200
    assert first.json()["status"] == "rejected"
    for body in ({"type": "approve"}, {"type": "reject"}, {"type": "edit", "args": {}}):
        again = decide(client, rid, body)
        assert again.status_code == 409
        assert again.json() == {"error": "already decided", "status": "rejected"}
    assert inbox.wait_sync(rid, 1) == {"type": "reject", "message": "no"}


def test_bad_decisions(client: TestClient, rid: str) -> None:
    bad_json = client.post(
        f"/api/requests/{rid}/decision",
        content=b"{not json",
        headers={"content-type": "application/json", **COOKIE_HEADER, **SAME_ORIGIN},
    )
    assert bad_json.status_code == 400
    assert decide(client, rid, {"type": "sure"}).status_code == 400
    assert decide(client, rid, {"type": "edit", "args": "x"}).status_code == 400
    assert decide(client, "no-such-id", {"type": "approve"}).status_code == 404
    assert decide(client, rid, {"type": "edit", "args": {"pad": "x" * 300_000}}).status_code == 413
    assert client.get("/api/requests/no-such-id", headers=COOKIE_HEADER).status_code == 404
    assert client.get("/static/../_inbox.py", headers=COOKIE_HEADER).status_code == 404
    assert client.get("/static/index.html", headers=COOKIE_HEADER).status_code == 404


def test_a_redacted_value_is_in_no_answer(client: TestClient, inbox: Inbox, rid: str) -> None:
    answers = [
        client.get("/", headers=COOKIE_HEADER),
        client.get("/static/inbox.js", headers=COOKIE_HEADER),
        client.get("/api/requests", headers=COOKIE_HEADER),
        client.get(f"/api/requests/{rid}", headers=COOKIE_HEADER),
    ]
    record = answers[-1].json()
    assert record["args"] == {"service": "api", "api_key": "[redacted]"}
    assert record["hidden"] == ["api_key"]
    # A person types a new key into the edit box: the worker gets it, no answer ever shows it.
    answers.append(decide(client, rid, {"type": "edit", "args": {"service": "api", "api_key": "sk-NEW-typed-key"}}))
    answers.append(client.get("/api/requests", headers=COOKIE_HEADER))
    assert answers[-1].json()["history"][0]["decision"]["args"]["api_key"] == "[redacted]"
    for answer in answers:
        assert answer.status_code == 200
        assert SECRET not in answer.text
        assert "sk-NEW-typed-key" not in answer.text
    assert inbox.wait_sync(rid, 1) == {"type": "edit", "args": {"service": "api", "api_key": "sk-NEW-typed-key"}}


@pytest.mark.redis
def test_a_store_that_is_down_answers_503(redis_factory: Any) -> None:
    server = redis_factory()
    with TestClient(create_app(Inbox(server.url), token=TOKEN)) as client:
        assert client.get("/api/requests", headers=COOKIE_HEADER).status_code == 200
        server.stop()
        response = client.get("/api/requests", headers=COOKIE_HEADER)
        assert response.status_code == 503
        assert response.json() == {"error": "the inbox store is unreachable"}
        assert decide(client, "some-id", {"type": "approve"}).status_code == 503


def test_create_app_refuses_a_weak_token(inbox: Inbox) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        create_app(inbox, token="short")
    with pytest.raises(ValueError, match="at least 16"):
        create_app(inbox, token="")


# -- mcp-guard inbox ---------------------------------------------------------------------------------------------


def test_the_command_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MCP_GUARD_INBOX_TOKEN", raising=False)
    assert main(["inbox", "--store", "redis://127.0.0.1:1/0"]) == 2
    assert "a token is required" in capsys.readouterr().err
    assert main(["inbox", "--store", "redis://127.0.0.1:1/0", "--token", "short"]) == 2
    assert "at least 16" in capsys.readouterr().err
    assert main(["inbox", "--store", "sqlite:///x", "--token", TOKEN]) == 2
    assert "memory:// or redis://" in capsys.readouterr().err


@pytest.mark.redis
def test_the_command_serves_a_redis_inbox(redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "MCP_GUARD_INBOX_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_guard._cli.main",
            "inbox",
            "--store",
            redis_url,
            "--port",
            str(port),
            "--prefix",
            "app1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"mcp-guard inbox: open http://127.0.0.1:{port}/?token={TOKEN}"
        worker = Inbox(redis_url, policy=POLICY, prefix="app1")
        Inbox(redis_url, policy=POLICY).submit_sync(ApprovalRequest("deploy", {}))  # another app's inbox: not listed
        rid = worker.submit_sync(ApprovalRequest("deploy", {"service": "api", "api_key": SECRET}))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/requests", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    listed = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)  # the server is still starting
        assert [r["id"] for r in listed["pending"]] == [rid]
        assert SECRET not in json.dumps(listed)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_web_app_needs_the_inbox_extra() -> None:
    script = (
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from mcp_guard import Inbox\n"
        "from mcp_guard._errors import MissingExtraError\n"
        "from mcp_guard._inbox.web import create_app\n"
        "try:\n"
        "    create_app(Inbox('memory://'), token='t' * 20)\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert install_hint("inbox") in out.stdout
