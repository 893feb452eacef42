"""A real Redis Cluster for the tests (a pytest plugin, loaded by conftest's ``pytest_plugins``).

- ``redis_cluster`` (session): a :class:`LocalCluster` of three masters on free loopback ports, started with
  ``redis-server --cluster-enabled yes`` and joined by ``redis-cli --cluster create``; stopped and its
  directory removed at the end of the run.
- ``redis_cluster_url``: its ``redis+cluster://`` URL, every master flushed before the test.
- ``cluster_factory``: ``cluster_factory(node_timeout_ms=...)`` starts a private cluster a test may break
  (``kill(port)``); all stopped at the end.

Missing binaries skip the test with a message, or fail it when ``MCP_GUARD_REQUIRE_REDIS=1`` (CI). Valkey's
``valkey-server``/``valkey-cli`` are used when Redis's are not installed.
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
from typing import Any

import pytest

SERVER = shutil.which("redis-server") or shutil.which("valkey-server")
CLI = shutil.which("redis-cli") or shutil.which("valkey-cli")


def _need_binaries() -> tuple[str, str]:
    if SERVER is None or CLI is None:
        message = (
            "redis-server and redis-cli are not both installed (apt-get install redis-server redis-tools); "
            "the Redis Cluster tests need a real cluster"
        )
        if os.environ.get("MCP_GUARD_REQUIRE_REDIS") == "1":
            pytest.fail(message + " and MCP_GUARD_REQUIRE_REDIS=1")
        pytest.skip(message)
    return SERVER, CLI


def _port_pair_free(port: int) -> bool:
    # A cluster node also listens on its bus port, port + 10000.
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _free_ports(n: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port < 55000 and port not in taken and port not in ports and _port_pair_free(port):
            ports.append(port)
    return ports


_used_ports: set[int] = set()  # ports handed out in this run: a stopped node's port is not reused


def _command(port: int, *args: str, timeout: float = 2.0) -> Any:
    """One command to one node, with a throwaway redis-py connection (no cluster logic)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


class LocalCluster:
    """Masters on 127.0.0.1 without replicas or persistence. ``url`` lists every node."""

    def __init__(self, server: str, cli: str, masters: int = 3, node_timeout_ms: int = 15000) -> None:
        self.server, self.cli = server, cli
        self.ports = _free_ports(masters, _used_ports)
        _used_ports.update(self.ports)
        self.node_timeout_ms = node_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="mcpg-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> LocalCluster:
        try:
            for port in self.ports:
                cmd = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
                cmd += ["--cluster-config-file", os.path.join(self.dir, f"nodes-{port}.conf")]
                cmd += ["--cluster-node-timeout", str(self.node_timeout_ms), "--dir", self.dir]
                cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
                self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port in self.ports:
                self._wait(lambda port=port: _command(port, "PING") is True, f"node {port} did not start")
            create = [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            done = subprocess.run(
                [*create, "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, timeout=60, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout.decode()} {done.stderr.decode()}")
            for port in self.ports:
                self._wait(lambda port=port: self.state(port) == "ok", f"node {port} never saw cluster_state:ok")
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _wait(ready: Callable[[], bool], message: str, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                if ready():
                    return
            except Exception:  # not up yet: keep polling until the deadline
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.05)

    def state(self, port: int) -> str:
        """``cluster_state`` as this node sees it: ``ok`` or ``fail``."""
        info = _command(port, "CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        for line in text.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def wait_state(self, port: int, state: str, within: float = 20.0) -> None:
        self._wait(lambda: self.state(port) == state, f"node {port} never saw cluster_state:{state}", within)

    def command(self, port: int, *args: str) -> Any:
        return _command(port, *args)

    def port_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for start, end, master, *_ in _command(self.ports[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(slot)

    def flushall(self) -> None:
        for port in self.ports:
            if self.procs.get(port) is not None:
                _command(port, "FLUSHALL")

    def script_calls(self) -> int:
        """Scripts the masters ran (EVAL/EVALSHA that did not fail, e.g. on NOSCRIPT) since :meth:`reset_stats`."""
        total = 0
        for port in self.ports:
            stats = _command(port, "INFO", "commandstats")
            for name in ("cmdstat_evalsha", "cmdstat_eval"):
                entry = stats.get(name, {})
                total += int(entry.get("calls", 0)) - int(entry.get("failed_calls", 0))
        return total

    def reset_stats(self) -> None:
        for port in self.ports:
            _command(port, "CONFIG", "RESETSTAT")

    def kill(self, port: int) -> None:
        """SIGKILL one node: no goodbye to the clients or the other nodes."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(*_need_binaries()).start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalCluster) -> str:
    """URL of the session's cluster, every master flushed before this test."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """Start private clusters a test may break; all stopped at the end."""
    binaries = _need_binaries()
    clusters: list[LocalCluster] = []

    def start(**options: Any) -> LocalCluster:
        cluster = LocalCluster(*binaries, **options)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.close()
