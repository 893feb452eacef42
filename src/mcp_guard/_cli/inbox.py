"""``mcp-guard inbox``: serve the approval inbox's web page (extra ``inbox``) for an inbox store."""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import urlsplit

from mcp_guard._cli.common import command, fail, listen_socket
from mcp_guard._errors import MissingExtraError, require_extra
from mcp_guard._inbox.inbox import Inbox
from mcp_guard._inbox.web import MIN_TOKEN_CHARS, TOKEN_ENV, create_app

# -- mcp-guard inbox -------------------------------------------------------------------------------------


def add_inbox_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``mcp-guard inbox`` (one line in the CLI's SUBCOMMANDS)."""
    parser = command(
        subparsers,
        "inbox",
        run_inbox,
        description="Serve a page listing the approval requests waiting in an inbox store, to approve, edit or "
        f"reject them. A token is required: --token or ${TOKEN_ENV} (at least {MIN_TOKEN_CHARS} characters).",
    )
    parser.add_argument("--store", required=True, metavar="URL", help="the workers' inbox store: redis://host:port/db")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--token", default=None, help=f"access token (default: ${TOKEN_ENV})")
    parser.add_argument("--poll", type=float, default=1.0, metavar="S", help="page refresh interval in seconds")
    parser.add_argument("--prefix", default="mcpg:inbox", help="Redis key prefix the workers' Inbox uses")
    return parser


def run_inbox(args: argparse.Namespace) -> int:
    """serve the approval inbox's web page (extra 'inbox')"""
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        return fail(f"a token is required: --token or ${TOKEN_ENV}", subcommand="inbox")
    if len(token) < MIN_TOKEN_CHARS:
        return fail(
            f"the token must be at least {MIN_TOKEN_CHARS} characters "
            '(python -c "import secrets; print(secrets.token_urlsafe())")',
            subcommand="inbox",
        )
    try:
        uvicorn = require_extra("uvicorn", "inbox", "mcp-guard inbox")
        app = create_app(Inbox(args.store, prefix=args.prefix), token=token, poll_s=args.poll)
    except (MissingExtraError, ValueError) as exc:  # a bad --store is a ConfigurationError, a ValueError
        return fail(str(exc), subcommand="inbox")
    # Bound here, not by uvicorn: a port in use is one line naming it, exit 2 (uvicorn's own error exits 3).
    sock = listen_socket(args.host, args.port, subcommand="inbox")
    if urlsplit(args.store).scheme == "memory":
        print("mcp-guard inbox: warning: a memory:// store is private to this process; workers cannot reach it")
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mcp-guard inbox: open http://{host}:{args.port}/?token={token}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("mcp-guard inbox: warning: the token travels in clear over HTTP; put TLS in front of this server")
    # No access log: the first visit's URL carries the token. log_config=None: uvicorn's records go to the
    # CLI's one-line handler.
    config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


__all__ = ["add_inbox_parser", "run_inbox"]
