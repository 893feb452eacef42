"""What every ``mcp-guard`` subcommand shares: exit codes, the parser shape, one-line failures, loading a policy.

Each command module (:mod:`mcp_guard._cli`, :mod:`mcp_guard._cli_living`, :mod:`mcp_guard._proxy`,
:mod:`mcp_guard._scaffold`, :mod:`mcp_guard._inbox_web`) registers its parser with :func:`command` and reports a
failure with :func:`fail` or :func:`load_policy`, so a flag, an exit code or a message is written in one place.
This module imports nothing beyond the standard library and the errors, so ``mcp-guard --help`` stays cheap and
every command module can import it without importing another command.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp_guard._errors import MissingExtraError, PolicyError

if TYPE_CHECKING:
    from mcp_guard._policy import Policy

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_APPROVAL = 4
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in mcp-guard, reported in one line too

EXIT_CODES_HELP = (
    "exit codes: 0 ok (explain: the call would be admitted); 1 a policy does not validate; 2 bad input (usage, "
    "unreadable, too large or too deeply nested file, --args not a JSON object, missing extra); 3 explain: the "
    "call would be refused; 4 explain: the call would need a human's approval"
)

#: The help of every option or argument that names a policy file.
POLICY_FILE_HELP = "policy file (.json, .yaml or .yml)"

Run = Callable[[argparse.Namespace], int]


def command(subparsers: Any, name: str, run: Run, **parser_options: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name``, which runs ``run(args)``; returns its parser for the caller's arguments.

    As click does, the command documents itself: the first line of ``run``'s docstring is the one-line
    ``help`` listed under ``mcp-guard --help``, the paragraphs after it the ``description`` (one paragraph:
    argparse re-wraps it). ``parser_options`` go to ``add_parser`` as they are (``epilog``, ``usage``, or a
    ``description`` that must be computed). ``main`` calls ``args.func(args)``.
    """
    summary, _, details = (inspect.getdoc(run) or "").partition("\n")
    parser_options.setdefault("help", summary)
    parser_options.setdefault("description", " ".join(details.split()))
    parser: argparse.ArgumentParser = subparsers.add_parser(name, **parser_options)
    parser.set_defaults(func=run)
    return parser


def fail(message: str, code: int = EXIT_USAGE, *, subcommand: str | None = None) -> int:
    """Print ``mcp-guard: message`` (``mcp-guard SUBCOMMAND: message``) on stderr, never a traceback, and return
    the exit code ``code``."""
    print(f"mcp-guard {subcommand}: {message}" if subcommand else f"mcp-guard: {message}", file=sys.stderr)
    return code


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of what went wrong, for one line on stderr.

    anyio and the ``mcp`` SDK wrap failures in (nested) exception groups; the first leaf says what happened.
    Unwrapped by duck typing: the builtin ``BaseExceptionGroup`` does not exist on Python 3.10.
    """
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return f"{type(exc).__name__}: {exc}"


def load_policy(path: str) -> Policy | int:
    """The policy file at ``path``, or the exit code after saying why not on stderr.

    An invalid policy prints its own problem lines (``FILE: /pointer: message``) and gives 1; a missing extra
    (``yaml`` for a YAML file) gives 2, as for any bad input.
    """
    from mcp_guard._policy import Policy

    try:
        return Policy.load(path)
    except PolicyError as exc:
        return invalid(exc, path)
    except MissingExtraError as exc:
        return fail(str(exc))


def invalid(exc: PolicyError, file: str | None = None) -> int:
    """Print an invalid policy's problems on stderr and return exit code 1.

    With the policy's ``file``, one line per problem as ``validate`` writes it (``FILE:LINE:COLUMN: /pointer:
    message``, the position read from the file's text); without it, the error's own lines as they are.
    """
    if file is None or not exc.errors:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    from mcp_guard._locate import Locator, position_in_message

    try:
        with open(file, encoding="utf-8-sig") as fh:
            text = fh.read()
        locator: Locator | None = Locator(text, "json" if file.lower().endswith(".json") else "yaml")
    except (OSError, UnicodeDecodeError):
        locator = None
    for err in exc.errors:
        path, message = err.get("path", ""), err.get("message", "")
        at = position_in_message(message) if not path else None
        if at is None and path and locator is not None:
            at = locator.locate(path)
        where = file + (f":{at[0]}:{at[1]}" if at else "")
        print(f"{where}: {path}: {message}" if path else f"{where}: {message}", file=sys.stderr)
    return EXIT_INVALID


__all__ = [
    "EXIT_APPROVAL",
    "EXIT_CODES_HELP",
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "POLICY_FILE_HELP",
    "command",
    "describe_error",
    "fail",
    "invalid",
    "load_policy",
]
