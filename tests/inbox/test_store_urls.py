"""Which store an ``Inbox(url)`` uses is read from the URL's scheme in one registry, and a URL it cannot use fails
when the Inbox is built, as a ``ConfigurationError`` naming the URL (never its password) and the schemes there are.

Judged at the far side: a request submitted through each scheme is read back from the real redis-server's keys.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest
import redis

from mcp_guard import ApprovalRequest, ConfigurationError, Inbox, PolicyError
from mcp_guard._cli.main import main
from mcp_guard._inbox.stores import Backend, Conn, StoreOptions, backend_from_url
from mcp_guard._inbox.urls import shown_url
from tests.support.redis_server import RedisServer

PASSWORD = "hunter2-Pa55"
TOKEN = "t" * 20


def _stored_status(url: str, rid: str, prefix: str = "mcpg:inbox") -> Any:
    """What the redis-server itself holds for request ``rid`` (not what the Inbox says it holds)."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return client.hget(f"{prefix}:req:{rid}", "status")


# -- each scheme reaches its store ----------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_urls_reach_the_redis_server(redis_url: str) -> None:
    rid = Inbox(redis_url, prefix="urls").submit_sync(ApprovalRequest("note", {"text": "hi"}))
    assert _stored_status(redis_url, rid, prefix="urls") == "pending"


@pytest.mark.redis
def test_unix_socket_urls_reach_the_redis_server(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    rid = Inbox(server.unix_url).submit_sync(ApprovalRequest("note", {"text": "hi"}))
    assert _stored_status(server.url, rid) == "pending"  # read back over TCP: the same server


def test_memory_urls_stay_in_the_process() -> None:
    first = Inbox("memory://urls-test")
    rid = first.submit_sync(ApprovalRequest("note", {"text": "hi"}))
    assert [r["id"] for r in Inbox("memory://urls-test").listing_sync()[0]] == [rid]  # the same named inbox
    assert Inbox("memory://urls-other").listing_sync()[0] == []  # another name, another inbox


def test_every_scheme_is_registered_and_a_new_store_registers_itself() -> None:
    assert {"memory", "redis", "rediss", "unix"} <= set(Backend._registry)
    Inbox("rediss://127.0.0.1:1/0")  # TLS: built without connecting (nothing listens there)

    made: list[str] = []

    class Elsewhere(Backend):  # a store of one's own: defining the class is what registers it
        schemes = ("x-elsewhere",)

        @classmethod
        def from_url(cls, url: str, options: StoreOptions) -> Backend:
            made.append(url)
            return cls()

        async def connect(self) -> Conn:
            raise NotImplementedError

    try:
        Inbox("X-Elsewhere://there")  # schemes are case-insensitive, as in urllib
        assert made == ["X-Elsewhere://there"]
    finally:
        del Backend._registry["x-elsewhere"]


# -- a URL it cannot use ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///x", "'sqlite:///x': the scheme 'sqlite'"),
        (f"postgres://app:{PASSWORD}@db:5432/inbox", "'postgres://***@db:5432/inbox': the scheme 'postgres'"),
        ("localhost:6379", "the scheme 'localhost'"),  # a host without a scheme reads as the scheme "localhost"
        ("", "'': it has no scheme"),
        (f"//:{PASSWORD}@host:6379/0", "'***@host:6379/0': it has no scheme"),
        (f"user:{PASSWORD}@host", "'***@host': the scheme 'user'"),
    ],
)
def test_an_unknown_scheme_names_the_url_and_the_schemes_there_are(url: str, shown: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Inbox(url)
    message = str(caught.value)
    assert shown in message
    assert "memory://, redis://, rediss://, unix://" in message
    assert "memory:// or redis://" in message  # what 0.2 said, which callers may match on
    assert PASSWORD not in message


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"redis://user:{PASSWORD}@127.0.0.1:6379/0?socket_connect_timeout=soon",
        f"redis://:{PASSWORD}@[::1/0",  # urllib itself cannot read it
        f"redis://127.0.0.1:6379/0?password={PASSWORD}&socket_timeout=abc",
        f"redis://:{PASSWORD.replace('-', '%2D')}@127.0.0.1:99999/0",
    ],
)
def test_a_malformed_redis_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid Redis inbox URL") as caught:
        Inbox(url)
    printed = "".join(traceback.format_exception(caught.value))  # all a log would hold, causes included
    assert "127.0.0.1" in printed or "::1" in printed  # the URL is named...
    assert PASSWORD not in printed  # ...never its password
    assert PASSWORD.replace("-", "%2D") not in printed


def test_a_bad_url_is_still_a_policy_error_for_0_2_callers() -> None:
    # 0.2 raised PolicyError here; StoreConfigurationError is both, as for a bad rate-limit store URL.
    for url in ("sqlite:///x", "redis://127.0.0.1:notaport/0"):
        with pytest.raises(PolicyError) as caught:
            Inbox(url)
        assert isinstance(caught.value, ValueError)  # as PolicyError and ConfigurationError both are


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="lease"):
        Inbox("memory://", lease_s=1, lease_renew_s=2)
    with pytest.raises(ConfigurationError, match="history"):
        Inbox("memory://", history=0)
    with pytest.raises(ConfigurationError) as caught:
        Inbox("memory://", webhook=f"ftp://u:{PASSWORD}@host/hook?token={PASSWORD}", webhook_secret="k")
    assert PASSWORD not in str(caught.value)
    assert "ftp://***@host/hook?token=***" in str(caught.value)


def test_the_registry_is_what_inbox_uses() -> None:
    options = StoreOptions(prefix="p", timeout_s=1.0, history=5, history_ttl_s=60.0, clock=lambda: 0.0)
    with pytest.raises(ConfigurationError, match="'nope://x'"):
        backend_from_url("nope://x", options)


def test_shown_url_hides_userinfo_and_option_values() -> None:
    assert shown_url(f"redis://:{PASSWORD}@h:6379/0") == "redis://***@h:6379/0"
    assert shown_url(f"redis://u:{PASSWORD}@h/0?password={PASSWORD}&db=1") == "redis://***@h/0?password=***&db=***"
    assert shown_url(f"redis://:pa/ss@{PASSWORD}@h/0") == "redis://***@h/0"  # to the last @, as urllib reads it
    assert shown_url("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=***"
    assert shown_url("memory://") == "memory://"
    assert repr(Inbox(f"redis://:{PASSWORD}@127.0.0.1:6379/0")) == "Inbox(redis://***@127.0.0.1:6379/0)"


# -- the command line ----------------------------------------------------------------------------------------------


def test_the_command_says_what_is_wrong_with_the_store_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inbox", "--store", f"sqlite://u:{PASSWORD}@host/x", "--token", TOKEN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mcp-guard inbox: unknown inbox store 'sqlite://***@host/x'")
    assert PASSWORD not in err
    assert main(["inbox", "--store", f"redis://:{PASSWORD}@127.0.0.1:x/0", "--token", TOKEN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcp-guard inbox: invalid Redis inbox URL 'redis://***@127.0.0.1:x/0'")
    assert PASSWORD not in err
