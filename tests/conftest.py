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
- ``redis_cluster``, ``redis_cluster_url``, ``cluster_factory``: see ``cluster_fixture.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from mcp_guard._stores import Store
from mcp_guard._stores.memory import MemoryStore

REDIS_BINARY = shutil.which("redis-server")

pytest_plugins = ("cluster_fixture",)  # redis_cluster, redis_cluster_url, cluster_factory: a real Redis Cluster


class FakeClock:
    """A clock that moves only when told: ``clock()`` is the time, ``clock.advance(s)`` moves it on.

    Starts at an epoch-sized value so float precision matches real timestamps.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _need_redis() -> str:
    if REDIS_BINARY is None:
        message = "redis-server is not installed (apt-get install redis-server); the Redis tests need a real server"
        if os.environ.get("MCP_GUARD_REQUIRE_REDIS") == "1":
            pytest.fail(message + " and MCP_GUARD_REQUIRE_REDIS=1")
        pytest.skip(message)
    return REDIS_BINARY


class RedisServer:
    """A real redis-server subprocess on 127.0.0.1, no persistence. ``url`` stays valid across restarts."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self.socket_path = os.path.join(tempfile.mkdtemp(prefix="mcpg-redis-"), "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The same server over its Unix socket."""
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--unixsocket", self.socket_path]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10.0
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {err.strip()}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def close(self) -> None:
        """Stop for good and remove the socket's directory."""
        self.stop()
        shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def flushdb(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHDB\r\n")
            if not s.recv(16).startswith(b"+OK"):
                raise RuntimeError("FLUSHDB failed")


@pytest.fixture(scope="session")
def _redis_session_server() -> Iterator[RedisServer]:
    server = RedisServer(_need_redis()).start()
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
    binary = _need_redis()
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
