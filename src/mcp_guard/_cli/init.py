"""``mcp-guard init``: read an MCP server's tools (over stdio, or streamable HTTP), and write a starter policy.

The starter policy follows the tools' MCP annotations, read with MCP's own defaults (a tool that says nothing
is assumed to write, destructively, to an open world):

* ``readOnlyHint: true`` (class ``read``)                    -> allowed
* ``destructiveHint: false`` (class ``write`` or ``open_world``) -> allowed, rate-limited (30 a minute per identity)
* everything else (``destructive``, or no annotations at all)   -> a human approves each call
* a tool not named (added to the server later) -> ``classes`` treat it the same way by its annotations, and
  ``default: deny`` refuses it when it has none

The classification is the evaluator's own (:func:`mcp_guard._policy.policy.risk_class`), so the rules written here
and the ``classes`` applied at run time agree.

Every rule carries a ``description`` saying why, so the file reads as a checklist to review. Annotations are
hints from the server: do not ship the starter policy without reading it; a server that lies about
``readOnlyHint`` gets its tools allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from mcp_guard._cli.common import HeldLogs, command, describe_error, fail
from mcp_guard._compat import tool_annotations
from mcp_guard._errors import MissingExtraError
from mcp_guard._guard.pins import canonical_tool
from mcp_guard._install import install_hint
from mcp_guard._policy.policy import risk_class as _policy_risk_class

# The rate limit written for write tools: generous enough not to get in a human's way, tight enough to stop a
# model that loops. One counter per tool, so one noisy tool cannot starve the others.
WRITE_LIMIT_MAX = 30
WRITE_LIMIT_WINDOW = "minute"
APPROVAL_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """What ``init`` needs from one MCP tool: its name, description and annotations (as a plain dict)."""

    name: str
    description: str | None = None
    annotations: Mapping[str, Any] = field(default_factory=dict)
    pin_form: Mapping[str, Any] = field(default_factory=dict)
    """The tool as ``mcp-guard pin`` locks it (:func:`mcp_guard._guard.pins.canonical_tool`): schema and title too."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The server's own name (from its ``initialize`` answer) and its tools, in the order it listed them."""

    name: str | None
    tools: tuple[ToolInfo, ...]


def risk_class(annotations: Mapping[str, Any]) -> str:
    """``read``, ``write``, ``open_world`` or ``destructive``: the policy's own classification (so the rules
    written here and the ``classes`` the evaluator applies agree), with MCP's defaults for missing hints.

    ``readOnlyHint`` defaults to false and ``destructiveHint`` to true, so an unannotated tool is destructive.
    """
    return _policy_risk_class(annotations) or "destructive"


def _why(annotations: Mapping[str, Any]) -> str:
    hints = [f"{k}={json.dumps(annotations[k])}" for k in _HINT_KEYS if k in annotations]
    return ", ".join(hints) if hints else "no annotations (MCP assumes destructive)"


_HINT_KEYS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def _rule_for(tool: ToolInfo) -> dict[str, Any]:
    kind = risk_class(tool.annotations)
    why = _why(tool.annotations)
    if kind == "read":
        return {"description": f"Read-only ({why}): allowed."}
    if kind in ("write", "open_world"):
        reach = " It may reach systems outside the server (openWorldHint)." if kind == "open_world" else ""
        return {
            "description": f"Writes without destroying ({why}): allowed, at most {WRITE_LIMIT_MAX} calls a "
            f"{WRITE_LIMIT_WINDOW} per identity so a looping model stops.{reach}",
            "limits": _write_limits(f"{tool.name}_rate"),
        }
    return {
        "action": "require_approval",
        "description": f"May destroy or change things for good ({why}): a human approves each call.",
        "approval": {
            "timeout_s": APPROVAL_TIMEOUT_S,
            "description": f"{tool.name}: {_first_line(tool.description) or 'a destructive tool'}",
        },
    }


def _write_limits(counter: str) -> list[dict[str, Any]]:
    # A fresh list per rule: YAML output would otherwise share one object through an anchor and aliases.
    return [{"counter": counter, "window": WRITE_LIMIT_WINDOW, "max": WRITE_LIMIT_MAX, "scope": "identity"}]


def _first_line(text: str | None) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


def starter_policy(server: ServerInfo) -> dict[str, Any]:
    """The starter policy for ``server``'s tools, as a dict ready for ``json.dumps`` (pure: no I/O)."""
    label = server.name or "the MCP server"
    counts = {"read": 0, "write": 0, "open_world": 0, "destructive": 0}
    tools: dict[str, Any] = {}
    for tool in server.tools:
        counts[risk_class(tool.annotations)] += 1
        tools[tool.name] = _rule_for(tool)
    return {
        "version": "1",
        "name": f"{server.name or 'mcp-server'}-starter",
        "description": (
            f"Starter policy written by `mcp-guard init` for {label}: {counts['read']} read, "
            f"{counts['write'] + counts['open_world']} write and {counts['destructive']} destructive tools, "
            "classified by their MCP "
            "annotations. Annotations are the server's own claims: review every rule before relying on it."
        ),
        "default": "deny",
        "tools": tools,
        "classes": {
            "read": {"description": "A read-only tool not named above (e.g. added to the server later): allowed."},
            "write": {
                "description": "A non-destructive write tool not named above: allowed, rate-limited.",
                "limits": _write_limits("unlisted_writes_rate"),
            },
            "open_world": {
                "description": "A non-destructive tool not named above that reaches outside the server: allowed, "
                "rate-limited.",
                "limits": _write_limits("unlisted_writes_rate"),
            },
            "destructive": {
                "action": "require_approval",
                "description": "A destructive tool not named above: a human approves each call.",
            },
        },
    }


def render(policy: Mapping[str, Any], fmt: str) -> str:
    """The policy as ``json`` or ``yaml`` text (YAML needs the ``yaml`` extra)."""
    if fmt == "json":
        return json.dumps(policy, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        try:
            import yaml
        except ImportError as exc:
            raise MissingExtraError(
                f"writing YAML requires the 'yaml' extra: {install_hint('yaml')} (or write .json)"
            ) from exc
        header = "# Starter policy written by `mcp-guard init`. Review every rule before relying on it.\n"
        text: str = yaml.safe_dump(dict(policy), sort_keys=False, allow_unicode=True, width=120)
        return header + text
    raise ValueError(f"unknown format {fmt!r}: use 'json' or 'yaml'")


def is_url(target: str) -> bool:
    """True when ``init``'s argument names a streamable-HTTP endpoint rather than a command to start."""
    return target.startswith(("http://", "https://"))


async def read_server(command: Sequence[str] | str, *, timeout_s: float = 30.0, cwd: str | None = None) -> ServerInfo:
    """List an MCP server's tools (all pages): ``command`` is either a command to start over stdio (a list), or
    the URL of a running streamable-HTTP server (a string starting ``http://`` or ``https://``).

    A stdio server inherits this process's environment (stdio_client would otherwise pass only a safe subset,
    and a server that needs its API key in the environment would fail to start) and is stopped afterwards.
    """
    if not command:
        raise ValueError("no server given: mcp-guard init URL, or mcp-guard init -- COMMAND [ARGS...]")
    try:
        import anyio
        from mcp import ClientSession
    except ImportError as exc:
        raise MissingExtraError(
            "mcp-guard init requires the 'mcp' package, in the 'langchain' and 'openai-agents' extras: "
            f"{install_hint('openai-agents')}"
        ) from exc

    with anyio.fail_after(timeout_s):
        async with _transport(command, cwd) as streams, ClientSession(streams[0], streams[1]) as session:
            init = await session.initialize()
            tools: list[ToolInfo] = []
            cursor: str | None = None
            while True:
                page = await _list_tools_page(session, cursor)
                for tool in page.tools:
                    schema = _field(tool, "input_schema", "inputSchema")
                    form = canonical_tool(
                        tool.name, tool.description, schema if isinstance(schema, Mapping) else None,
                        tool_annotations(tool.annotations),
                    )  # fmt: skip
                    tools.append(ToolInfo(tool.name, tool.description, _annotations(tool), form))
                cursor = _field(page, "next_cursor", "nextCursor")
                if not cursor:
                    break
    info = _field(init, "server_info", "serverInfo")
    return ServerInfo(info.name if info else None, tuple(tools))


def _transport(command: Sequence[str] | str, cwd: str | None) -> AbstractAsyncContextManager[Sequence[Any]]:
    """The client transport for ``command``: streamable HTTP for a URL, stdio for a command line.

    Both yield a tuple whose first two items are the read and write streams (mcp 1.x's HTTP client adds a
    session-id getter as a third).
    """
    if isinstance(command, str):
        if not is_url(command):
            raise ValueError(f"not an http(s) URL: {command!r}; give a command as a list")
        import mcp.client.streamable_http as http

        # mcp 2.x and late 1.x spell it streamable_http_client; earlier 1.x only streamablehttp_client.
        client = getattr(http, "streamable_http_client", None) or http.streamablehttp_client
        return cast("AbstractAsyncContextManager[Sequence[Any]]", client(command))
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=dict(os.environ), cwd=cwd)
    return cast("AbstractAsyncContextManager[Sequence[Any]]", stdio_client(params, errlog=_errlog()))


async def _list_tools_page(session: Any, cursor: str | None) -> Any:
    if not cursor:
        return await session.list_tools()
    from mcp.types import PaginatedRequestParams  # both majors take the cursor inside params

    return await session.list_tools(params=PaginatedRequestParams(cursor=cursor))


def _field(obj: Any, snake: str, camel: str) -> Any:
    """A protocol field by its mcp 2.x (snake_case) or mcp 1.x (camelCase) attribute name."""
    return getattr(obj, snake, getattr(obj, camel, None))


def _annotations(tool: Any) -> dict[str, Any]:
    """The tool's annotation hints under their wire (camelCase) names, whichever mcp major built the model."""
    if not tool.annotations:
        return {}
    annotations: dict[str, Any] = tool.annotations.model_dump(exclude_none=True, by_alias=True)
    annotations.pop("title", None)
    return annotations


def _errlog() -> TextIO:
    """Where the server's stderr goes: ours, read now (mcp's default was bound when it was first imported),
    or the process's original stderr when ours has no file descriptor (Jupyter, captured test output)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    return sys.stderr


def _format_for(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output and Path(output).suffix.lower() in (".yaml", ".yml"):
        return "yaml"
    return "json"


_INIT_EXAMPLES = (
    "examples: mcp-guard init --output policy.json -- python examples/servers/exchange_server.py\n"
    "          mcp-guard init --output policy.json http://127.0.0.1:8000/mcp"
)


def add_init_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``init`` on the CLI's subparsers (``build_parser`` in ``_cli/main.py`` calls this)."""
    parser = command(
        subparsers, "init", run_init, epilog=_INIT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write here (.json, or .yaml/.yml); default stdout")
    parser.add_argument("--format", choices=("json", "yaml"), help="output format (default: from FILE's suffix)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)")
    parser.add_argument("server_command", nargs=argparse.REMAINDER, metavar="URL | -- COMMAND ...")
    return parser


def run_init(args: argparse.Namespace) -> int:
    """write a starter policy from an MCP server's tools and annotations

    Read an MCP server's tools and annotations (start it over stdio after --, or give the URL of a running
    streamable-HTTP server) and write a starter policy: default deny; read-only tools allowed; write tools
    rate-limited; destructive tools require approval.
    """
    # Exit 0 on success, 2 when the server cannot be started or read, or the output cannot be written.
    if not args.timeout > 0:
        return fail("--timeout must be > 0", subcommand="init")
    command = list(args.server_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return fail(
            "give a streamable-HTTP URL (mcp-guard init http://127.0.0.1:8000/mcp) or the server command after -- "
            "(mcp-guard init -- python server.py)",
            subcommand="init",
        )
    # One argument that is a URL names a running server; anything else is a command line to start over stdio.
    target: list[str] | str = command[0] if len(command) == 1 and is_url(command[0]) else command
    shown = target if isinstance(target, str) else " ".join(command)
    # The mcp SDK logs a traceback for each line of a server that is not JSON-RPC: held back here, and the
    # first folded into the one line that says the server could not be read.
    held = HeldLogs()
    try:
        with _progress(f"reading tools from {shown} (waiting up to {args.timeout:g} s)"), held:
            server = asyncio.run(read_server(target, timeout_s=args.timeout))
    except MissingExtraError as exc:
        return fail(str(exc), subcommand="init")
    except TimeoutError:
        return fail(
            f"{shown} did not answer as an MCP server within {args.timeout:g} s{held.hint()}", subcommand="init"
        )
    except Exception as exc:
        # Startup failures surface as OSError or as an ExceptionGroup from the transport's task group.
        why = describe_error(exc) + held.hint()
        return fail(f"could not read tools from {shown!r}: {why}", subcommand="init")
    try:
        text = render(starter_policy(server), _format_for(args.output, args.format))
    except MissingExtraError as exc:  # YAML asked for, without the 'yaml' extra
        return fail(str(exc), subcommand="init")
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            return fail(f"cannot write {args.output}: {exc.strerror or exc}", subcommand="init")
        print(f"wrote {args.output}: {len(server.tools)} tools from {server.name or shown}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _progress(message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner on stderr while a slow server starts, on a terminal only (scripts and pipes see nothing)."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message, spinner="dots")


__all__ = [
    "ServerInfo",
    "ToolInfo",
    "add_init_parser",
    "is_url",
    "read_server",
    "render",
    "risk_class",
    "run_init",
    "starter_policy",
]
