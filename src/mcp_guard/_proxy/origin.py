"""Who may knock at the proxy's HTTP front: the ``Host`` and ``Origin`` checks against DNS rebinding.

A web page can make a browser send requests to ``http://127.0.0.1:PORT`` by rebinding its own name to that
address; the browser then sends the page's name in ``Host`` (and its origin in ``Origin``), never the
proxy's. So the front accepts only the names it was told are its own:

- ``Host``: by default the loopback names ``localhost``, ``127.0.0.1`` and ``[::1]`` with the listening
  port; ``--allow-host`` adds one (``NAME`` also matches ``NAME:PORT`` of the listening port, ``NAME:PORT``
  one port, ``NAME:*`` any port, ``*`` any Host at all, for a gateway that checks Host itself). A request
  without a ``Host`` is refused unless ``*`` was given.
- ``Origin``: absent (not a browser, or a same-origin ``GET``) passes; ``null`` never does; otherwise it must
  name one of the allowed hosts (the proxy's own pages, same-origin) or be listed with ``--allow-origin``
  (``scheme://host[:port]``, ``scheme://host:*``, or ``*``).

The check runs before anything else (identity, the MCP session manager, the upstream): a refused request
starts no session and no upstream process. Pure functions plus one ASGI middleware; no I/O.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("mcp_guard.proxy")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ANY = "*"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def is_loopback(host: str) -> bool:
    """Whether ``--listen``'s host only accepts connections from this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to an address other machines reach


def _split(authority: str) -> tuple[str, str | None]:
    """``name[:port]`` (``[v6][:port]`` for IPv6) into a lower-case name and the port text (None if absent)."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority, None
        name, rest = authority[: end + 1], authority[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = authority.rpartition(":")
    if not sep or ":" in name:  # no port, or a bare IPv6 address (not valid in Host, kept whole so it fails)
        return authority, None
    return name, port


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    port: str | None  # None: the listening port or none; "*": any port; else that port

    def matches(self, name: str, port: str | None, listen_port: int, default: str = "80") -> bool:
        """``name[:port]`` as a Host header (or an origin) spells it; ``default``: the port when none is written."""
        if name != self.name:
            return False
        if self.port == ANY:
            return True
        if self.port is None:
            return port is None or port == str(listen_port)
        # Browsers leave out the scheme's default port: "localhost" is "localhost:80".
        return (port or default) == self.port


def _host_entry(text: str) -> _Entry:
    if not text.strip() or any(c in text for c in "/@ \t,") or text.count("[") != text.count("]"):
        raise ValueError(f"--allow-host takes HOST, HOST:PORT or HOST:*, not {text!r}")
    name, port = _split(text)
    if port is not None and port != ANY and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"--allow-host {text!r}: the port must be a number or *")
    return _Entry(name, port)


def _origin_parts(text: str) -> tuple[str, str, str | None] | None:
    scheme, sep, authority = text.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https") or not authority or "/" in authority.rstrip("/"):
        return None
    name, port = _split(authority.rstrip("/"))
    if port == _DEFAULT_PORTS[scheme]:
        port = None  # the default port, written out or not, is the same origin
    return scheme, name, port


@dataclass(frozen=True)
class FrontDoor:
    """The ``Host`` and ``Origin`` values the HTTP front answers to; build it with :meth:`for_listen`."""

    listen_port: int
    hosts: tuple[_Entry, ...]
    any_host: bool
    origins: tuple[tuple[str, str, str | None], ...]
    any_origin: bool

    @classmethod
    def for_listen(cls, port: int, allow_hosts: Iterable[str] = (), allow_origins: Iterable[str] = ()) -> FrontDoor:
        """The loopback names with ``port``, plus what ``--allow-host`` / ``--allow-origin`` add.

        Raises ``ValueError`` (one line, naming the flag) for an entry that cannot be a host or an origin.
        """
        hosts = [_Entry(name, str(port)) for name in LOOPBACK_NAMES]
        any_host = False
        for text in allow_hosts:
            if text.strip() == ANY:
                any_host = True
            else:
                hosts.append(_host_entry(text))
        origins: list[tuple[str, str, str | None]] = []
        any_origin = False
        for text in allow_origins:
            if text.strip() == ANY:
                any_origin = True
                continue
            parts = _origin_parts(text)
            if parts is None or (parts[2] not in (None, ANY) and not str(parts[2]).isdigit()):
                raise ValueError(f"--allow-origin takes scheme://host[:port] (or scheme://host:*), not {text!r}")
            origins.append(parts)
        return cls(port, tuple(hosts), any_host, tuple(origins), any_origin)

    def host_ok(self, value: str | None) -> bool:
        if self.any_host:
            return True
        if not value:
            return False
        name, port = _split(value)
        return any(entry.matches(name, port, self.listen_port) for entry in self.hosts)

    def origin_ok(self, value: str | None) -> bool:
        if value is None or self.any_origin:
            return True
        parts = _origin_parts(value)
        if parts is None:  # "null" (sandboxed frames, file: pages) and anything malformed
            return False
        scheme, name, port = parts
        for allowed_scheme, allowed_name, allowed_port in self.origins:
            if (allowed_scheme, allowed_name) == (scheme, name) and allowed_port in (port, ANY):
                return True
        # Same-origin: a page served under one of the proxy's own names (named hosts only, never "*").
        default = _DEFAULT_PORTS[scheme]
        return any(entry.matches(name, port, self.listen_port, default) for entry in self.hosts)

    def allowed_hosts(self) -> str:
        """The allowed Host values, for messages."""
        if self.any_host:
            return ANY
        return ", ".join(e.name if e.port is None else f"{e.name}:{e.port}" for e in self.hosts)


class FrontDoorMiddleware:
    """ASGI middleware: refuse a request whose ``Host`` (421) or ``Origin`` (403) the :class:`FrontDoor` rejects.

    Runs first, so a refused request reaches neither the identity check nor the MCP session manager.
    """

    def __init__(self, app: ASGIApp, door: FrontDoor) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        host = origin = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        if not self.door.host_ok(host):
            log.warning("refused a request for Host %.100r (allowed: %s)", host, self.door.allowed_hosts())
            reason = (
                f"Host {host!r:.100} is not a name this proxy answers to (DNS-rebinding protection); "
                "start the proxy with --allow-host to add one"
            )
            await _refuse(421, "misdirected_request", reason, scope, receive, send)
            return
        if not self.door.origin_ok(origin):
            log.warning("refused a request from Origin %.100r", origin)
            reason = (
                f"requests from Origin {origin!r:.100} are not accepted (DNS-rebinding protection); "
                "start the proxy with --allow-origin to add one"
            )
            await _refuse(403, "forbidden_origin", reason, scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _refuse(status: int, error: str, reason: str, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":  # not served, but never let one through: close before accepting
        await send({"type": "websocket.close", "code": 1008})
        return
    await JSONResponse({"error": error, "reason": reason}, status_code=status)(scope, receive, send)


__all__ = ["LOOPBACK_NAMES", "FrontDoor", "FrontDoorMiddleware", "is_loopback"]
