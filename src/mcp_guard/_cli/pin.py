"""``mcp-guard pin``: lock an MCP server's tools as reviewed, or check (in CI) that they have not changed.

``mcp-guard pin --server notes -- python notes_server.py`` lists the server's tools (stdio, or a streamable-HTTP
URL) and writes each one's description, input schema, annotations and SHA-256 into the lock file (default
``mcp-guard.lock``), replacing what was pinned for that server and keeping other servers' entries: several
servers share one lock. ``--check`` writes nothing: it prints what changed (new, removed and changed tools,
with a diff of descriptions and JSON-pointer lines for schemas and annotations) and exits 3 on any drift, so a
CI job fails when a server's tools are no longer the ones reviewed. The policy's ``pins`` block names the
lock, and the guard compares every listing with it at run time (:mod:`mcp_guard._guard.pins`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from mcp_guard._cli.common import EXIT_OK, EXIT_REFUSED, HeldLogs, command, describe_error, fail
from mcp_guard._cli.init import is_url, read_server
from mcp_guard._errors import ConfigurationError, MissingExtraError
from mcp_guard._guard.pins import Lock

_EXAMPLES = """examples:
  mcp-guard pin --server notes -- python examples/servers/notes_server.py
  mcp-guard pin --server github http://127.0.0.1:8000/mcp        # a streamable-HTTP server
  mcp-guard pin --check --server notes -- python examples/servers/notes_server.py   # in CI: exit 3 on drift
"""


def add_pin_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "pin", run_pin, epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, metavar="NAME", help="the server's name in the lock and in rules")
    parser.add_argument("--lock", default="mcp-guard.lock", metavar="FILE", help="lock file (default mcp-guard.lock)")
    parser.add_argument("--check", action="store_true", help="compare with the lock, write nothing; exit 3 on drift")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)")
    parser.add_argument("server_command", nargs=argparse.REMAINDER, metavar="URL | -- COMMAND ...")
    return parser


def run_pin(args: argparse.Namespace) -> int:
    """lock an MCP server's tools as reviewed (or --check them against the lock)

    List an MCP server's tools (start it over stdio after --, or give the URL of a running streamable-HTTP
    server) and write each tool's description, input schema, annotations and SHA-256 into the lock file, for
    the policy's pins block. With --check, print what changed since and exit 3 if anything did.
    """
    # Exit 0: written, or no drift; 2: bad input or the server cannot be read; 3: --check found drift.
    cmd = list(args.server_command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        return fail("give a streamable-HTTP URL or the server command after --", subcommand="pin")
    if not args.timeout > 0:
        return fail("--timeout must be a positive number of seconds", subcommand="pin")
    target: list[str] | str = cmd[0] if len(cmd) == 1 and is_url(cmd[0]) else cmd
    shown = target if isinstance(target, str) else " ".join(cmd)
    try:
        lock = Lock.load(args.lock, missing_ok=not args.check)
    except ConfigurationError as exc:
        return fail(str(exc), subcommand="pin")
    held = HeldLogs()  # the mcp SDK's tracebacks for a server that is not MCP: folded into one line
    try:
        with held:
            server = asyncio.run(read_server(target, timeout_s=args.timeout))
    except MissingExtraError as exc:
        return fail(str(exc), subcommand="pin")
    except TimeoutError:
        return fail(f"{shown} did not answer as an MCP server within {args.timeout:g} s{held.hint()}", subcommand="pin")
    except Exception as exc:
        return fail(f"could not read tools from {shown!r}: {describe_error(exc)}{held.hint()}", subcommand="pin")
    forms = [tool.pin_form for tool in server.tools]
    if args.check:
        lines = lock.diff_server(args.server, forms)
        if not lines:
            print(f"{args.lock}: {args.server}: {len(forms)} tools as pinned", file=sys.stderr)
            return EXIT_OK
        print(f"{args.lock}: {args.server}: the tools differ from the lock", file=sys.stderr)
        for line in lines:
            print(line)
        return EXIT_REFUSED
    lock.pin_server(args.server, forms)
    try:
        lock.save(args.lock)
    except OSError as exc:
        return fail(f"cannot write {args.lock}: {exc.strerror or exc}", subcommand="pin")
    print(f"wrote {args.lock}: {len(forms)} tools of {args.server} ({server.name or shown})", file=sys.stderr)
    return EXIT_OK
