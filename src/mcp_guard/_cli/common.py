"""What every ``mcp-guard`` subcommand shares: exit codes, the parser shape, one-line failures, loading a policy.

Each command module (:mod:`mcp_guard._cli.main`, :mod:`mcp_guard._cli.living`, :mod:`mcp_guard._cli.proxy`,
:mod:`mcp_guard._cli.init`, :mod:`mcp_guard._inbox.web`) registers its parser with :func:`command` and reports a
failure with :func:`fail` or :func:`load_policy`, so a flag, an exit code or a message is written in one place.
This module imports nothing beyond the standard library and the errors, so ``mcp-guard --help`` stays cheap and
every command module can import it without importing another command.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp_guard._errors import MissingExtraError, PolicyError

if TYPE_CHECKING:
    from mcp_guard._policy.policy import Policy

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_APPROVAL = 4
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in mcp-guard, reported in one line too

EXIT_CODES_HELP = (
    "exit codes: 0 ok (explain: the call would be admitted); 1 a policy does not validate; 2 bad input or "
    "environment (usage, unreadable, too large or too deeply nested file, --args not a JSON object, missing extra, "
    "a port in use, an upstream that cannot be reached or is not an MCP server); 3 explain: the call would be "
    "refused; 4 explain: the call would need a human's approval"
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
    parser.set_defaults(func=run, subcommand=name)
    return parser


def fail(message: str, code: int = EXIT_USAGE, *, subcommand: str | None = None) -> int:
    """Print ``mcp-guard: message`` (``mcp-guard SUBCOMMAND: message``) on stderr, never a traceback, and return
    the exit code ``code``."""
    print(f"mcp-guard {subcommand}: {message}" if subcommand else f"mcp-guard: {message}", file=sys.stderr)
    return code


def leaf_error(exc: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups: anyio and the ``mcp`` SDK wrap failures in them.

    Unwrapped by duck typing: the builtin ``BaseExceptionGroup`` does not exist on Python 3.10.
    """
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line: line breaks become ``; `` (pydantic's and httpx's messages span several lines, and
    their "For more information" links are left out), cut at ``limit`` characters."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.lower().startswith(("for further information", "for more"))]
    joined = "; ".join(kept)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of what went wrong (the first leaf of any exception group), on one line for stderr."""
    exc = leaf_error(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


def load_policy(path: str, *, subcommand: str | None = None) -> Policy | int:
    """The policy file at ``path``, or the exit code after saying why not on stderr.

    An invalid policy prints its own problem lines (``FILE: /pointer: message``) and gives 1; a file that cannot
    be read (missing, a directory, too large, not UTF-8) or a missing extra (``yaml`` for a YAML file) gives 2,
    in one line, as for any bad input.
    """
    from mcp_guard._policy.model import PolicyInputError
    from mcp_guard._policy.policy import Policy

    try:
        return Policy.load(path)
    except PolicyInputError as exc:
        return fail(str(exc), subcommand=subcommand)
    except PolicyError as exc:
        return invalid(exc, path)
    except MissingExtraError as exc:
        return fail(str(exc), subcommand=subcommand)


def listen_socket(host: str, port: int, *, subcommand: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` for uvicorn's ``serve(sockets=[...])``, or ``SystemExit`` with one line.

    Bound by the command before it starts anything else (an upstream, a store), so a port in use or an address
    this machine does not have is said once, naming it, and exits 2; uvicorn left to bind prints its own error
    and exits 3 ("refused" in the table).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise SystemExit(f"mcp-guard {subcommand}: cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class OneLineHandler(logging.Handler):
    """Log records on stderr, one line each: ``mcp-guard SUBCOMMAND: level: logger: message (Type: error)``.

    What libraries log while a command runs (the ``mcp`` SDK logs a traceback for each line of a server that is
    not JSON-RPC; asyncio and uvicorn log an exception's traceback) reaches the terminal as one line, never as a
    traceback. Written to ``sys.stderr`` as it is at the time of the record (tests capture it).
    """

    def __init__(self, subcommand: str | None) -> None:
        super().__init__(logging.WARNING)
        self.prefix = f"mcp-guard {subcommand}" if subcommand else "mcp-guard"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{self.prefix}: {describe_record(record)}", file=sys.stderr)
        except Exception:  # pragma: no cover - a closed stderr: nothing more to say
            self.handleError(record)


def describe_record(record: logging.LogRecord) -> str:
    """One line for a log record: its level, logger and message, and its exception's ``Type: message``."""
    text = f"{record.levelname.lower()}: {record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        text += f" ({describe_error(record.exc_info[1])})"
    return one_line(text, limit=500)


class _Collector(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class HeldLogs:
    """What is logged while a command starts something (a server to read, an upstream), held back so that a
    failure is said in one line: the command's error, with the first record folded in (:meth:`hint`).

    Use as a context manager: inside it, records at WARNING and above go here instead of to the root logger's
    handlers. On a normal exit (or :meth:`pass_on`, once the thing started) they are passed on after all; when
    an exception leaves the block they are kept back, for the caller's one line.
    """

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._saved: list[logging.Handler] | None = None

    def __enter__(self) -> HeldLogs:
        root = logging.getLogger()
        self._saved, root.handlers = root.handlers[:], [_Collector(self.records)]
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.pass_on(replay=exc_type is None)

    def pass_on(self, *, replay: bool = True) -> None:
        """Give the root logger its handlers back and, with ``replay``, pass them what was held."""
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        logging.getLogger().handlers = saved
        for record in self.records if replay else ():
            for handler in saved:
                if record.levelno >= handler.level:
                    handler.handle(record)

    def hint(self) -> str:
        """`` (first: MESSAGE (Type: error))`` for the first record held, or nothing."""
        if not self.records:
            return ""
        record = self.records[0]
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {describe_error(record.exc_info[1])}"
        return f" (first: {one_line(text, limit=300)})"


def one_line_logging(subcommand: str | None) -> None:
    """Send warnings and errors that libraries log to :class:`OneLineHandler`, unless logging is set up already
    (an application calling ``main``, pytest's capture). Uncaught exceptions in threads are one line too."""
    root = logging.getLogger()
    if root.handlers:
        return
    root.addHandler(OneLineHandler(subcommand))
    prefix = f"mcp-guard {subcommand}" if subcommand else "mcp-guard"

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        where = f" in thread {args.thread.name}" if args.thread is not None else ""
        print(f"{prefix}: error{where}: {describe_error(args.exc_value)}", file=sys.stderr)

    threading.excepthook = thread_hook


def invalid(exc: PolicyError, file: str | None = None) -> int:
    """Print an invalid policy's problems on stderr and return exit code 1.

    With the policy's ``file``, one line per problem as ``validate`` writes it (``FILE:LINE:COLUMN: /pointer:
    message``, the position read from the file's text); without it, the error's own lines as they are.
    """
    if file is None or not exc.errors:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    from mcp_guard._policy.locate import Locator, position_in_message

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
    "HeldLogs",
    "OneLineHandler",
    "command",
    "describe_error",
    "describe_record",
    "fail",
    "invalid",
    "leaf_error",
    "listen_socket",
    "load_policy",
    "one_line",
    "one_line_logging",
]
