"""The ``mcp-guard`` commands for living with a policy: ``test``, ``usage`` and ``audit``.

Each is registered in :data:`mcp_guard._cli.main.SUBCOMMANDS`; the work lives in :mod:`mcp_guard._cli.policytest`,
:mod:`mcp_guard._guard.usage` and :mod:`mcp_guard._audit.summary`. Tables are drawn with ``rich`` (plain text when
the output is not a terminal). Exit codes follow the CLI's: 0 success, 1 a failed check (a test mismatch, an
invalid policy), 2 usage or input errors, each with one line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from mcp_guard._cli.common import POLICY_FILE_HELP, command, fail, invalid, load_policy
from mcp_guard._errors import MCPGuardError, MissingExtraError, PolicyError, StoreError, require_extra


def console(stream: Any = None) -> Console:
    # Piped output gets 120 columns rather than rich's 80 (rule pointers are long); highlight off: no colour
    # guessing on numbers. Colour only on a terminal (rich's own rule, and NO_COLOR is honoured).
    stream = stream or sys.stdout
    width = None if stream.isatty() else 120
    return Console(file=stream, highlight=False, width=width)


def window_text(seconds: float) -> str:
    words = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
    return words.get(float(seconds)) or f"{seconds:g} s"


def number(value: float) -> str:
    return f"{value:g}"


# -- usage ---------------------------------------------------------------------------------------------


def add_usage(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "usage", run_usage)
    parser.add_argument("policy", metavar="POLICY", help=POLICY_FILE_HELP)
    parser.add_argument("--store", required=True, help="store URL, e.g. redis://localhost:6379/0 (memory:// is empty)")
    parser.add_argument("--identity", help="caller identity (for per-identity limits)")
    parser.add_argument("--session", help="agent session or thread (for per-session limits)")
    parser.add_argument("--tool", help="only the limits a call of this tool is charged")
    parser.add_argument("--server", help="the tool's MCP server (for server-qualified rules)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run_usage(args: argparse.Namespace) -> int:
    """show how much of each limit is used in a store

    Read the store and print, per limit of the policy: units used, the max, what remains and when the next unit
    frees up. Reads only; changes nothing.
    """
    from mcp_guard._guard.guard import Guard

    policy = load_policy(args.policy)
    if isinstance(policy, int):
        return policy
    try:
        guard = Guard(policy, store=args.store)
    except (PolicyError, MissingExtraError, ValueError) as exc:
        return fail(str(exc))
    try:
        rows = guard.usage(identity=args.identity, session=args.session, tool=args.tool, server=args.server)
    except StoreError as exc:
        return fail(str(exc))
    finally:
        guard.close()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    out = console()
    if not rows:
        out.print("no limits apply" + (f" to {args.tool}" if args.tool else ""))
        return 0
    table = Table(title=f"usage in {args.store.split('?', 1)[0]}", title_justify="left")
    for name, justify in [
        ("counter", "left"),
        ("scope", "left"),
        ("key", "left"),
        ("used", "right"),
        ("max", "right"),
        ("remaining", "right"),
        ("window", "left"),
        ("next unit free in", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        free = "-" if r.next_free_in_s is None else f"{r.next_free_in_s:.1f} s"
        style = "red" if r.remaining <= 0 else None
        table.add_row(
            r.counter,
            r.scope,
            r.scope_key or "(all)",
            number(r.used),
            str(r.max),
            number(r.remaining),
            window_text(r.window_s),
            free,
            style=style,
        )
    out.print(table)
    return 0


# -- test ----------------------------------------------------------------------------------------------


def add_test(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "test", run_test)
    parser.add_argument("files", metavar="CASES", nargs="+", help="case files (.yaml, .yml or .json)")
    parser.add_argument("--policy", help="policy file (default: each case file's own 'policy' field)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    return parser


def run_test(args: argparse.Namespace) -> int:
    """run policy test cases (like opa test); exit 1 on any mismatch

    Run each case of each file through a real Guard (memory store, fake clock) and compare the decision with the
    expected action / code / rule. Exit 0 when all pass, 1 on any mismatch, 2 on bad input. The case file format:
    mcp-guard schema --cases.
    """
    from mcp_guard._cli.policytest import CaseFileError, load_cases, policy_file, print_results, run_cases

    results = []
    for path in args.files:
        try:
            cases = load_cases(path)
            policy = load_policy(policy_file(path, cases, args.policy))  # its problems with line and column
            if isinstance(policy, int):
                return policy
            results.extend(run_cases(policy, cases, path))
        except CaseFileError as exc:
            return fail(str(exc))
        except PolicyError as exc:
            return invalid(exc)
        except MCPGuardError as exc:
            return fail(str(exc))
    return print_results(results, console(), verbose=args.verbose)


# -- audit ---------------------------------------------------------------------------------------------


def add_audit(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "audit", run_audit)
    parser.add_argument("file", metavar="FILE", help="audit log, one JSON object per line ('-' for stdin)")
    parser.add_argument("--since", help="only events newer than this: 30m, 1h, 7d, or an ISO-8601 time")
    parser.add_argument(
        "--by", choices=("code", "tool", "identity"), default="code", help="group the main table by (default: code)"
    )
    parser.add_argument("--top", type=int, default=10, help="rows in the top-refused tables (default 10)")
    parser.add_argument("--plot", metavar="PNG", help="write a plot of decisions over time to this file")
    parser.add_argument(
        "--max-line",
        metavar="BYTES",
        type=_byte_count,
        default=None,
        help="longest line read; a longer one is counted as unreadable and skipped (default 1 MiB)",
    )
    return parser


def _byte_count(text: str) -> int:
    """``--max-line``: a plain integer in range ("1e400" or "inf" are not sizes); argparse reports a refusal."""
    from mcp_guard._audit.summary import MAX_LINE_RANGE

    low, high = MAX_LINE_RANGE
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"a number of bytes from {low:,} to {high:,} is needed, not {text[:40]!r}")
    return value


def run_audit(args: argparse.Namespace) -> int:
    """summarise an audit log (JSONL): decisions, top refused tools and callers, a plot

    Stream an audit log (constant memory) and print calls by decision and code, the most refused tools and callers,
    and optionally a PNG of decisions over time (needs the 'plot' extra).
    """
    from mcp_guard._audit.summary import MAX_LINE_BYTES, parse_since, plot, print_summary, summarise

    if args.plot:
        # Before reading anything: a missing extra is said at once, not after every table has been printed.
        try:
            require_extra("matplotlib", "plot", "mcp-guard audit --plot")
        except MissingExtraError as exc:
            return fail(str(exc))
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        return fail(str(exc))
    if args.top < 1:
        return fail("--top must be at least 1")
    max_line = MAX_LINE_BYTES if args.max_line is None else args.max_line
    try:
        summary = summarise(args.file, since=since, by=args.by, max_line=max_line)
    except OSError as exc:
        return fail(f"cannot read {args.file}: {exc.strerror or exc}")
    print_summary(summary, console(), by=args.by, top=args.top)
    if args.plot:
        try:
            plot(summary, args.plot)
        except MissingExtraError as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot write {args.plot}: {exc.strerror or exc}")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def cases_schema() -> dict[str, Any]:
    from mcp_guard._cli.policytest import json_schema

    return json_schema()


COMMANDS: Sequence[Any] = (add_test, add_usage, add_audit)

__all__ = ["COMMANDS", "add_audit", "add_test", "add_usage", "cases_schema"]
