"""Shared fixtures: a fake clock, real redis-servers, and the ``store`` matrix (memory and Redis).

- ``clock``: a :class:`FakeClock` (call it for the time, ``.advance(s)`` to move it). Inject it as
  ``clock=`` into stores and guards; never sleep to wait for a window.
- ``redis_server`` (session): URL of one redis-server started for the whole run on a free port.
  Missing binary: the test is skipped with a message, or fails when ``MCP_GUARD_REQUIRE_REDIS=1`` (CI).
- ``redis_url``: the same URL, with the database flushed before the test.
- ``redis_factory``: ``redis_factory()`` starts a private :class:`RedisServer` the test may ``stop()``,
  ``start()`` again on the same port, ``pause()``/``resume()`` (SIGSTOP, a hung server); ``url`` is TCP,
  ``unix_url`` the same server over a Unix socket; all stopped at the end.
- ``store``: parametrised ``memory``, ``redis`` and ``cluster`` (a 3-master Redis Cluster; both marked
  ``redis``), built with ``clock``: write a behaviour test once and it runs on every backend.
- ``redis_cluster``, ``redis_cluster_url``, ``cluster_factory``: see ``tests/support/cluster_fixture.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mcp_guard._stores import Store
from mcp_guard._stores.memory import MemoryStore
from tests.support.clock import FakeClock
from tests.support.redis_server import RedisServer, need_redis

if TYPE_CHECKING:  # the frameworks are imported only by the fixtures that use them: the extra venvs of .ci/run lack one
    from agents.mcp import MCPServerStdio

    from tests.support.langchain_helpers import ExchangeServer, RecordingSession

pytest_plugins = (
    "tests.support.cluster_fixture",
)  # redis_cluster, redis_cluster_url, cluster_factory: a real Redis Cluster


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def _redis_session_server() -> Iterator[RedisServer]:
    server = RedisServer(need_redis()).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server(_redis_session_server: RedisServer) -> str:
    """URL of the session's redis-server (not flushed: prefer ``redis_url``)."""
    return _redis_session_server.url


@pytest.fixture
def redis_url(_redis_session_server: RedisServer) -> str:
    """URL of the session's redis-server, flushed before this test."""
    _redis_session_server.flushdb()
    return _redis_session_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-servers a test can stop, restart and pause; all stopped at the end."""
    binary = need_redis()
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(binary).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Store]:
    """A fresh store on each backend, on the test's ``clock``."""
    if request.param == "memory":
        made: Store = MemoryStore(clock=clock)
    elif request.param == "cluster":
        from mcp_guard._stores.redis_cluster import RedisClusterStore

        made = RedisClusterStore(request.getfixturevalue("redis_cluster_url"), clock=clock)
    else:
        from mcp_guard._stores.redis import RedisStore

        made = RedisStore(request.getfixturevalue("redis_url"), clock=clock)
    yield made
    made.close()


# -- real MCP servers, one per test module (their tests carry ``module_loop``, tests/support/marks.py) ---------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exchange_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ExchangeServer]:
    """The counter server's exchange tools on one langchain-mcp-adapters session, for the module."""
    from tests.support.langchain_helpers import ExchangeServer

    exchange = await ExchangeServer(tmp_path_factory.mktemp("exchange") / "calls.txt").start()
    yield exchange
    await exchange.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recording_session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RecordingSession]:
    """The recording server on one langchain-mcp-adapters session, for the module; ``.record()`` is what it ran."""
    from tests.support.langchain_helpers import RecordingSession

    session = await RecordingSession(tmp_path_factory.mktemp("recording") / "record.jsonl").start()
    yield session
    await session.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The record file of ``agents_recording_server``: every call it ran (read it with ``read_record``)."""
    return tmp_path_factory.mktemp("agents_recording") / "record.jsonl"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents_recording_server(agents_record: Path) -> AsyncIterator[MCPServerStdio]:
    """The recording server as the Agents SDK's ``MCPServerStdio`` named ``exchange``, for the module."""
    from tests.support.agents_helpers import recording_server

    async with recording_server(agents_record) as server:
        yield server
