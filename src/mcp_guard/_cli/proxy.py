"""``mcp-guard proxy``: the same policy for every MCP client, in front of any MCP server.

    mcp-guard proxy --policy FILE [--store URL] [--audit PATH] [--identity ID] -- CMD ARGS...
    mcp-guard proxy --policy FILE --upstream URL --listen HOST:PORT [--identity-from bearer --tokens FILE |
                    --identity-header H] [--allow-host HOST[:PORT]]... [--allow-origin ORIGIN]...

Downstream is stdio unless ``--listen`` is given (streamable HTTP at ``/mcp``); upstream is the command
(started over stdio) unless ``--upstream`` names a streamable-HTTP URL. Every path is the JSON-RPC relay of
:mod:`mcp_guard._proxy.relay` (each message parsed once, strictly, and re-serialised; only tool calls decided,
everything else passed both ways): on stdio pipes it reads the client itself; with ``--no-relay`` (or a terminal
or a file on stdin) through the SDK's stdio server, and with ``--listen`` through the SDK's streamable-HTTP server
(:mod:`mcp_guard._proxy.bridge`, :mod:`mcp_guard._proxy.http`). This module only parses options
and runs them, and imports the ``mcp`` SDK only when the command runs, so ``mcp-guard --help`` and ``import mcp_guard``
need no extra.

The HTTP front answers only its own loopback names unless ``--allow-host`` / ``--allow-origin`` widen it
(:mod:`mcp_guard._proxy.origin`, against DNS rebinding); a non-loopback ``--listen`` must name its hosts. A
bearer identity needs ``--tokens`` (or, loudly, ``--trust-any-bearer``). Failures are one line and exit 2: a
port in use (bound before the upstream starts), an upstream that cannot be reached or is not an MCP server.

Shutdown: when the client closes stdin (or on SIGINT/SIGTERM) the upstream is closed the way the MCP spec
asks (stdin closed, then SIGTERM, then SIGKILL), so no upstream process outlives the proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp_guard._cli.common import (
    POLICY_FILE_HELP,
    HeldLogs,
    command,
    describe_error,
    fail,
    leaf_error,
    listen_socket,
    load_policy,
)
from mcp_guard._errors import MissingExtraError, require_extra
from mcp_guard._proxy.jwt_gate import add_jwt_options, jwt_configured, verifier_from_args

#: How long the HTTP front waits for its upstream to answer ``initialize`` before giving up (exit 2).
UPSTREAM_START_TIMEOUT_S = 60.0


def add_proxy_parser(subparsers: Any) -> argparse.ArgumentParser:
    usage = "%(prog)s --policy FILE [options] (-- CMD ARGS... | --upstream URL) [--listen HOST:PORT]"
    parser = command(subparsers, "proxy", run_proxy, usage=usage)
    parser.add_argument("--policy", required=True, metavar="FILE", help=POLICY_FILE_HELP)
    parser.add_argument("--store", default="memory://", metavar="URL", help="rate-limit store (default memory://)")
    parser.add_argument("--audit", metavar="PATH", help="append one JSON line per call to this file")
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        help="server name for server-qualified rules (default: the upstream's serverInfo.name)",
    )
    parser.add_argument(
        "--fail-mode",
        choices=("closed", "open"),
        default="closed",
        help="when the store is unreachable: deny (closed, default) or allow and log",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="watch the policy file and put each valid new version in force (extra `reload`); clients are told "
        "to list tools again (stdio relay)",
    )
    parser.add_argument(
        "--inbox",
        metavar="URL",
        help="approval inbox store (memory:// or redis://) for clients that cannot answer elicitation; "
        "decide on the page of `mcp-guard inbox --store URL` (default: such calls are refused, approval_required)",
    )
    parser.add_argument(
        "--approval-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for an approval before refusing (default 300)",
    )
    _add_identity_options(parser)
    add_jwt_options(parser)
    parser.add_argument("--upstream", metavar="URL", help="a streamable-HTTP MCP server to forward to")
    parser.add_argument("--listen", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp")
    _add_front_options(parser)
    parser.add_argument(
        "--no-relay",
        action="store_true",
        help="stdio: read the client through the mcp SDK's stdio server instead of the relay's own pipe reader "
        "(the relay still passes each message on as it parsed it and guards only tool calls); the upstream is "
        "reached once first, to fail in one line if it is not an MCP server",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the upstream server's command line")
    return parser


def _add_identity_options(parser: argparse.ArgumentParser) -> None:
    # Who is calling: one fixed identity, or (HTTP) one read from each request. ``--tokens`` is listed with
    # the other options, after --approval-timeout; the three alternatives have their own section.
    who = parser.add_argument_group("identity (one of)")
    who.add_argument("--identity", metavar="ID", help="the caller identity of every call")
    who.add_argument(
        "--identity-from", choices=("bearer",), help="HTTP: the Authorization bearer token (needs --tokens)"
    )
    who.add_argument("--identity-header", metavar="NAME", help="HTTP: the value of this request header")
    tokens_help = "with --identity-from bearer: a JSON map of token to identity; other tokens are refused (401)"
    parser.add_argument("--tokens", metavar="FILE", help=tokens_help)
    parser.add_argument(
        "--trust-any-bearer",
        action="store_true",
        help="with --identity-from bearer and no --tokens: take ANY token as its own identity (its SHA-256 "
        "prefix); a caller who invents tokens gets a fresh identity, and a fresh per-identity budget, each time",
    )


def _add_front_options(parser: argparse.ArgumentParser) -> None:
    # DNS rebinding: a web page can reach a local HTTP front under its own name. Only loopback names by default.
    front = parser.add_argument_group("HTTP front (with --listen)")
    front.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="also answer requests whose Host is this (repeatable; HOST:* any port, '*' any Host); by default "
        "only localhost, 127.0.0.1 and [::1] with the listening port; required when --listen is not a loopback "
        "address",
    )
    front.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept browser requests from this Origin, scheme://host[:port] (repeatable; '*' any); by "
        "default only the proxy's own allowed hosts",
    )


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"mcp-guard proxy: --listen must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


#: Each way to check a bearer token, as (flag, attribute of the parsed arguments). An identity read from a
#: bearer token needs exactly one (section 10); JWT keys (section 11, ``--jwt-keys``) join this list.
BEARER_CHECKS = (
    ("--tokens", "tokens"),
    ("--trust-any-bearer", "trust_any_bearer"),
    ("--jwt-keys", "jwt_keys"),
    ("--jwt-secret", "jwt_secret"),
)


def _check_bearer_options(args: argparse.Namespace) -> None:
    given = [flag for flag, attribute in BEARER_CHECKS if getattr(args, attribute, None)]
    if args.identity_from != "bearer":
        if given:
            raise SystemExit(f"mcp-guard proxy: {given[0]} goes with --identity-from bearer")
        return
    if not given:
        raise SystemExit(
            "mcp-guard proxy: --identity-from bearer needs a way to check tokens: add --tokens FILE (a JSON map of "
            "token to identity), or --trust-any-bearer to take any token as its own identity"
        )
    if len(given) > 1:
        raise SystemExit(f"mcp-guard proxy: give one of {', '.join(flag for flag, _ in BEARER_CHECKS)}")


def _front_door(args: argparse.Namespace, listen: tuple[str, int] | None) -> Any:
    """The Host/Origin allow-list of the HTTP front, or None without --listen (after checking the flags)."""
    if listen is None:
        if args.allow_host or args.allow_origin:
            raise SystemExit("mcp-guard proxy: --allow-host and --allow-origin go with --listen")
        return None
    from mcp_guard._proxy.origin import FrontDoor, is_loopback

    host, port = listen
    if not is_loopback(host) and not args.allow_host:
        raise SystemExit(
            f"mcp-guard proxy: --listen {args.listen} accepts connections from other machines: name the host "
            "names clients use with --allow-host HOST[:PORT] (DNS-rebinding protection; '*' to accept any Host)"
        )
    try:
        return FrontDoor.for_listen(port, args.allow_host, args.allow_origin)
    except ValueError as exc:
        raise SystemExit(f"mcp-guard proxy: {exc}") from None


def _tokens(path: str) -> Mapping[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"mcp-guard proxy: cannot read --tokens {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise SystemExit(f"mcp-guard proxy: --tokens {path} must be a JSON object of token -> identity strings")
    return data


def run_proxy(args: argparse.Namespace) -> int:
    """serve an MCP server through the policy, for any MCP client

    An MCP server in front of an MCP server: tools the policy hides are not listed, every tool call is decided,
    rate-limited, approved and audited by the policy, and refusals come back as isError results with the violation
    JSON. Resources and prompts pass through untouched.
    """
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if bool(command) == bool(args.upstream):
        raise SystemExit("mcp-guard proxy: give the upstream as either -- CMD ARGS... or --upstream URL")
    args.jwt = verifier_from_args(args) if jwt_configured(args) else None  # keys read (and checked) up front
    per_request = args.identity_from is not None or args.identity_header is not None
    if per_request and not args.listen:
        raise SystemExit("mcp-guard proxy: --identity-from and --identity-header need --listen (HTTP)")
    if sum(x is not None for x in (args.identity, args.identity_from, args.identity_header)) > 1:
        raise SystemExit("mcp-guard proxy: give one of --identity, --identity-from, --identity-header")
    _check_bearer_options(args)
    if not args.approval_timeout > 0:
        raise SystemExit("mcp-guard proxy: --approval-timeout must be > 0")
    listen = _listen(args.listen) if args.listen else None
    door = _front_door(args, listen)
    if command and shutil.which(command[0]) is None:
        raise SystemExit(f"mcp-guard proxy: the upstream command {command[0]!r} was not found")
    tokens = _tokens(args.tokens) if args.tokens else None

    from mcp_guard._guard.guard import Guard

    try:
        require_extra("mcp", "proxy", "mcp-guard proxy")
    except MissingExtraError as exc:
        return fail(str(exc))
    policy = load_policy(args.policy, subcommand="proxy")
    if isinstance(policy, int):
        return policy
    # Bound before anything starts (the upstream, the store): a port in use is one line and starts nothing.
    sock = listen_socket(*listen, subcommand="proxy") if listen is not None else None
    from mcp_guard._cli.session_lint import session_warnings

    for warning in session_warnings(policy.document, proxy=True):
        print(f"mcp-guard proxy: warning: {warning}", file=sys.stderr)
    try:
        approver = None
        if args.inbox:
            from mcp_guard._inbox.inbox import Inbox

            approver = Inbox(args.inbox, policy=policy)
        guard = Guard(
            args.policy if args.reload else policy,
            reload=args.reload,
            approver=approver,
            store=args.store,
            audit=args.audit,
            fail_mode=args.fail_mode,
            approval_timeout_s=args.approval_timeout,
        )
    except (MissingExtraError, ValueError, OSError) as exc:  # a bad store URL, an audit path that cannot be written
        if sock is not None:
            sock.close()
        return fail(str(exc), subcommand="proxy")

    try:
        if listen is None and not args.upstream and not args.no_relay and _can_relay():
            import asyncio

            from mcp_guard._proxy.relay import Relay, serve_stdio

            relay = Relay(guard, command, server_name=args.server_name, identity=args.identity)
            asyncio.run(serve_stdio(relay))
            return 0
    except Exception as exc:  # the upstream could not be started: say so in one line
        return fail(f"the relay to `{shlex.join(command)}` stopped: {describe_error(exc)}", subcommand="proxy")

    import anyio

    from mcp_guard._proxy.bridge import RelayFront, SdkRelay

    upstream = args.upstream or command
    identity_of, identity = _identity(args, tokens)
    gate = claims = None
    if args.jwt is not None:  # identity and claims from each request's verified bearer JWT
        from mcp_guard._proxy.jwt_gate import JwtGate, caller_claims

        gate, claims = JwtGate(args.jwt), caller_claims
    front = RelayFront(guard, upstream, server_name=args.server_name, identity=identity, claims=claims)
    # What the SDK logs while the upstream starts (a traceback per line of a server that is not JSON-RPC) is
    # held back and folded into the one line that says the upstream failed.
    starting = HeldLogs()
    try:
        # Every path is the relay; the upstream is first reached once, so that one that is down or not MCP is
        # one line before any client is served.
        with starting:
            anyio.run(_probe, front)
        if sock is None:
            relay = SdkRelay(guard, upstream, server_name=args.server_name, identity=args.identity)
            if not args.no_relay and _can_relay():
                import asyncio

                from mcp_guard._proxy.relay import serve_stdio

                asyncio.run(serve_stdio(relay))
            else:
                anyio.run(_serve_stdio, relay)
        else:
            from mcp_guard._proxy.http import serve_http

            anyio.run(serve_http, front, sock, door, identity_of, gate)
    except Exception as exc:
        if not front.connected:
            guard.close()
            return fail(_upstream_failed(upstream, exc, starting), subcommand="proxy")
        return fail(f"stopped serving: {describe_error(exc)}", subcommand="proxy")
    finally:
        if sock is not None:
            sock.close()
    return 0


def _upstream_failed(upstream: str | list[str], exc: BaseException, starting: HeldLogs) -> str:
    """One line naming the upstream that could not be started or reached, and why."""
    if isinstance(leaf_error(exc), TimeoutError):
        why = f"no answer within {UPSTREAM_START_TIMEOUT_S:g} s"
    else:
        why = describe_error(exc) + starting.hint()
    if isinstance(upstream, str):
        return f"no MCP server answered at {upstream}: {why}"
    return f"the upstream `{shlex.join(upstream)}` did not start as an MCP server: {why}"


def _can_relay() -> bool:
    from mcp_guard._proxy.relay import can_relay

    return can_relay()


def _identity(args: argparse.Namespace, tokens: Mapping[str, str] | None) -> tuple[Any, Any]:
    """(the HTTP front's identity reader or None, the proxy's identity: fixed, or read from each request)."""
    if args.jwt is not None:  # checked by the JWT gate before the request reaches the SDK
        from mcp_guard._proxy.jwt_gate import caller_identity

        return None, caller_identity
    if args.identity_from is None and args.identity_header is None:
        return None, args.identity
    from mcp_guard._proxy.http import identity_reader, request_identity

    if args.trust_any_bearer:
        print(
            "mcp-guard proxy: WARNING: --trust-any-bearer: any bearer token is taken as its own identity, so "
            "per-identity limits and rules do not hold against a caller who invents tokens; use --tokens FILE",
            file=sys.stderr,
        )
    identity_of = identity_reader(
        "bearer" if args.identity_from else "header",
        header=args.identity_header,
        tokens=tokens,
        trust_any=args.trust_any_bearer,
    )
    return identity_of, request_identity(identity_of)


async def _probe(proxy: Any) -> None:
    """Connect to the upstream once, before listening: fail early, in one line, if it is down or not MCP."""
    import anyio

    with anyio.fail_after(UPSTREAM_START_TIMEOUT_S):
        await proxy.probe()


async def _serve_stdio(relay: Any) -> None:
    """The relay, reading the client through the mcp SDK's stdio server (``--no-relay``, or a terminal or a file
    on stdin, which the relay's own pipe reader cannot read)."""
    import asyncio

    from mcp.server.stdio import stdio_server

    from mcp_guard._proxy.bridge import serve_on
    from mcp_guard._proxy.relay import tell_on_reload

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, relay.stop)
    tell_on_reload(relay)
    async with stdio_server() as (read_stream, write_stream):
        try:
            await serve_on(relay, read_stream, write_stream)
        finally:
            await relay.guard.aclose()  # store connections and audit files, from the loop that used them
        if relay.stopped:
            # The upstream is closed by now. The SDK reads stdin in a thread that only a line or EOF can
            # wake, and a signal brings neither: leave without waiting for it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


__all__ = ["add_proxy_parser", "run_proxy"]
