"""Real redis-server subprocesses for the tests: :class:`RedisServer` and the check that the binary is there.

A missing binary skips the test with a message, or fails it when ``MCP_GUARD_REQUIRE_REDIS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.support.servers.proxy_support import free_port

REDIS_BINARY = shutil.which("redis-server")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def need_redis() -> str:
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
        self.port = port or free_port()
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
