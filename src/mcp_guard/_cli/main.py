"""The ``mcp-guard`` command: ``validate``, ``explain``, ``schema`` (and ``init``, from :mod:`mcp_guard._cli.init`).

Subcommands are registered in :data:`SUBCOMMANDS`: each entry takes the ``subparsers`` object and adds its
parser with :func:`mcp_guard._cli.common.command`, which takes the help from the run function's docstring and
sets ``func`` (a ``Namespace -> int`` exit code). Adding a command is one entry.

Exit codes (the same for every command, listed in ``--help``):

* 0 success (``explain``: the call would be admitted);
* 1 a policy does not validate;
* 2 bad input: command-line usage, an unreadable / too large / too deep / non-UTF-8 file, ``--args`` that is
  not a JSON object, a missing extra (argparse's convention);
* 3 ``explain``: the call would be refused (denied, hidden, invalid arguments, ...);
* 4 ``explain``: the call would be held for a human's approval.

Bad input never prints a traceback: one line on stderr per problem (``FILE:LINE:COLUMN: /pointer: message``
for policy problems, the form editors and pre-commit read). The CLI needs no extra except ``yaml`` for
YAML files and ``init``'s own. Tables and colour (``rich``) only when the output is a terminal; piped
output is plain text, stable for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_guard._cli import living
from mcp_guard._cli.common import (
    EXIT_APPROVAL,
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    POLICY_FILE_HELP,
    command,
    one_line_logging,
)
from mcp_guard._cli.inbox import add_inbox_parser
from mcp_guard._cli.session_lint import session_warnings
from mcp_guard._errors import MissingExtraError, PolicyError
from mcp_guard._policy.argcheck import non_finite_path
from mcp_guard._policy.decision import Decision
from mcp_guard._policy.locate import Locator, position_in_message
from mcp_guard._policy.matching import Pattern, parse_pattern, pointer
from mcp_guard._policy.model import MAX_POLICY_BYTES, PolicyInputError, parse_json, parse_yaml
from mcp_guard._policy.policy import Policy, read_policy_file

AddCommand = Callable[[Any], argparse.ArgumentParser]


# -- validate ------------------------------------------------------------------------------------------


def _shadows(hide: Pattern, rule: Pattern) -> bool:
    """Whether ``hide`` matches every (server, name) that ``rule`` matches (exact names and ``*`` suffice)."""
    if hide.server is not None and hide.server != rule.server:
        return False  # a qualified hide covers one server; an unqualified rule reaches every server
    if rule.exact:
        return hide.matches(rule.name, rule.server)
    return hide.name == "*" or hide.name == rule.name


def policy_warnings(policy: Policy, *, proxy: bool = False, guardrail: bool = False) -> list[str]:
    """Rules that can never apply, and other things that are valid but almost certainly not meant.

    ``proxy``: the policy is for ``mcp-guard proxy``, where no user text is seen (``from: [user]`` never holds).
    ``guardrail``: the policy is for an Agents SDK ``policy_guardrail`` used alone, which sees no tool output.
    """
    doc = policy.document
    out: list[str] = []
    hides = [(i, parse_pattern(text)) for i, text in enumerate(doc.hide)]
    patterns = {text: parse_pattern(text) for text in doc.tools}
    for text, pat in patterns.items():
        for i, hide in hides:
            if _shadows(hide, pat):
                out.append(
                    f"{pointer('tools', text)}: never applies: every tool it matches is hidden by /hide/{i} "
                    f"({hide.text!r}), and hidden tools are denied before any rule is looked at"
                )
                break
    catch_all = [t for t, p in patterns.items() if p.server is None and p.name == "*"]
    if doc.classes and catch_all:
        out.append(
            f"/classes: never applies: the tool pattern {catch_all[0]!r} matches every name, and classes only "
            "apply to tools that no tool pattern matches"
        )
    for text, rule in doc.tools.items():
        for n, lim in enumerate(rule.limits):
            if lim.max == 0:
                out.append(f"{pointer('tools', text, 'limits', n, 'max')}: max is 0, so this limit refuses every call")
    if doc.all_tools is not None:
        for n, lim in enumerate(doc.all_tools.limits):
            if lim.max == 0:
                out.append(f"/all_tools/limits/{n}/max: max is 0, so every call in the policy is refused")
    out.extend(session_warnings(doc, proxy=proxy, guardrail=guardrail))
    return out


def _add_validate(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "validate", _run_validate, epilog=EXIT_CODES_HELP)
    parser.add_argument("files", nargs="+", metavar="FILE", help="policy files (.json, .yaml or .yml)")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default): one line per problem, FILE:LINE:COLUMN: /path: message; json: a list of "
        "{file, line, column, path, message, severity} for editors",
    )
    parser.add_argument(
        "--max-bytes",
        type=_max_bytes,
        default=MAX_POLICY_BYTES,
        metavar="N",
        help="largest file accepted (default 5 MB, at most 1 GiB)",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="the policy is for mcp-guard proxy: also warn about checks that cannot work there (from: [user])",
    )
    parser.add_argument(
        "--agents-guardrail",
        action="store_true",
        help="the policy is for the Agents SDK's policy_guardrail used alone: also warn about checks that need "
        "tool outputs, which it never sees (result rules, no_secrets, from: [trusted | untrusted | tool])",
    )
    return parser


def _max_bytes(text: str) -> int:
    """``--max-bytes``: 1 byte to 1 GiB. Beyond that the read buffer alone would fail (a MemoryError reported as
    a file "too complex to read"); below, every file is "too large"."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if not 1 <= value <= 1 << 30:
        raise argparse.ArgumentTypeError(f"a number of bytes from 1 to {1 << 30:,} is needed, not {text[:40]!r}")
    return value


class _Loaded:
    """One policy file read and checked: the policy, or the problems that kept it from loading."""

    def __init__(self, file: str, max_bytes: int) -> None:
        self.file = file
        self.policy: Policy | None = None
        self.status = EXIT_OK
        self.problems: list[dict[str, Any]] = []
        self._locator: Locator | None = None
        try:
            data, kind, source = read_policy_file(file, max_bytes)
            try:
                self._locator = Locator(data.decode("utf-8-sig"), kind)
            except UnicodeDecodeError:
                self._locator = None
            self.policy = Policy._from_text(data, kind, source, max_bytes=max_bytes)
        except PolicyInputError as exc:
            self.status = EXIT_USAGE
            self._add(exc.errors or [{"path": "", "message": str(exc)}], "error")
        except PolicyError as exc:
            self.status = EXIT_INVALID
            self._add(exc.errors or [{"path": "", "message": str(exc)}], "error")
        except MissingExtraError as exc:
            self.status = EXIT_USAGE
            self._add([{"path": "", "message": str(exc)}], "error")
        except (RecursionError, MemoryError) as exc:  # belt and braces: the bounds should stop these first
            self.status = EXIT_USAGE
            self._add([{"path": "", "message": f"the file is too complex to read ({type(exc).__name__})"}], "error")

    def _add(self, errors: list[dict[str, str]], severity: str) -> None:
        for err in errors:
            path, message = err.get("path", ""), err.get("message", "")
            # A whole-file problem carries its position in its message (malformed text, an alias) or has none;
            # a field's position is read from the text (never for a file that could not be read as a document).
            at = position_in_message(message) if not path else None
            if at is None and path and self._locator is not None:
                at = self._locator.locate(path)
            self.problems.append(
                {
                    "file": self.file,
                    "line": at[0] if at else None,
                    "column": at[1] if at else None,
                    "path": path,
                    "message": message,
                    "severity": severity,
                }
            )

    def warn(self, proxy: bool = False, guardrail: bool = False) -> None:
        if self.policy is None:
            return
        for warning in policy_warnings(self.policy, proxy=proxy, guardrail=guardrail):
            path, _, message = warning.partition(": ")
            self._add([{"path": path, "message": message}], "warning")


def _problem_line(p: Mapping[str, Any]) -> str:
    where = p["file"] + (f":{p['line']}:{p['column']}" if p["line"] is not None else "")
    prefix = "warning: " if p["severity"] == "warning" else ""
    return f"{prefix}{where}: {p['path'] or '/'}: {p['message']}"


def _run_validate(args: argparse.Namespace) -> int:
    """check policy files; exit 0 when all are valid, 1 when one is not

    Load policies (JSON or YAML) and report every problem with its field path, line and column. Also warns about
    rules that can never apply. Takes several files (for pre-commit).
    """
    results = [_Loaded(f, args.max_bytes) for f in args.files]
    for r in results:
        r.warn(args.proxy, args.agents_guardrail)
    if args.format == "json":
        print(json.dumps([p for r in results for p in r.problems], ensure_ascii=False, indent=2))
    else:
        err = _console(sys.stderr)
        for r in results:
            for p in r.problems:
                style = "yellow" if p["severity"] == "warning" else "red"
                _say(err, _problem_line(p), style)
            if r.policy is not None:
                doc, policy = r.policy.document, r.policy
                label = f" ({policy.name})" if policy.name else ""
                print(
                    f"{r.file}{label}: valid; {_count(len(doc.tools), 'tool rule')}, "
                    f"{_count(len(doc.hide), 'hidden pattern')}, {_count(len(doc.classes), 'class rule')}, "
                    f"default {doc.default}; {policy.hash}"
                )
    statuses = {r.status for r in results}
    return EXIT_USAGE if EXIT_USAGE in statuses else (EXIT_INVALID if EXIT_INVALID in statuses else EXIT_OK)


def _load(path: str) -> Policy | int:
    """The policy at ``path``, or the exit code after printing why it could not be loaded (one line each)."""
    loaded = _Loaded(path, MAX_POLICY_BYTES)
    for p in loaded.problems:
        print(_problem_line(p), file=sys.stderr)
    return loaded.policy if loaded.policy is not None else loaded.status


# -- terminal output ---------------------------------------------------------------------------------------


def _console(stream: Any) -> Any:
    """A rich Console on ``stream`` when it is a terminal, else ``None`` (plain, stable text)."""
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return None
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True)


def _say(console: Any, text: str, style: str | None = None) -> None:
    if console is None:
        print(text, file=sys.stderr)
    else:
        console.print(text, style=style, markup=False)


# -- explain -------------------------------------------------------------------------------------------


def _json_arg(text: str | None, what: str) -> Mapping[str, Any] | None:
    """A JSON object given on the command line, or SystemExit (exit 2) with one line saying why not."""
    if text is None:
        return None
    if len(text) > MAX_POLICY_BYTES:
        raise SystemExit(f"mcp-guard explain: --{what} is too long (over {MAX_POLICY_BYTES:,} characters)")
    try:
        value = json.loads(text)
    except RecursionError:
        raise SystemExit(f"mcp-guard explain: --{what} is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, or an integer past Python's 4,300 digits (not a decode error)
        raise SystemExit(f"mcp-guard explain: --{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"mcp-guard explain: --{what} must be a JSON object, e.g. '{{\"amount\": 5}}'")
    return value


def _evaluate(
    policy: Policy,
    args: argparse.Namespace,
    call_args: Mapping[str, Any] | None,
    annotations: Mapping[str, Any] | None,
    view: Any = None,
    context: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> Decision:
    """What a Guard decides at steps 1-3: NaN or Infinity anywhere in the arguments (``1e400`` reads as inf) is
    refused before any rule, as the Guard does; ``Policy.evaluate`` alone checks only where a rule reads them."""
    bad = non_finite_path(call_args) if call_args else None
    if bad is not None:
        return Decision.deny(
            args.tool,
            "invalid_arguments",
            server=args.server,
            reason=f"{bad} is not a finite number (NaN and Infinity are not valid JSON)",
            policy=policy.hash,
        )
    return policy.evaluate(
        args.tool,
        call_args,
        server=args.server,
        identity=args.identity,
        session=args.session,
        annotations=annotations,
        session_view=view,
        context=context,
        claims=claims,
    )


def _add_explain(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "explain", _run_explain, epilog=EXIT_CODES_HELP)
    parser.add_argument("file", metavar="FILE", help=POLICY_FILE_HELP)
    parser.add_argument("--tool", required=True, metavar="NAME", help="tool name, exactly as the server gives it")
    parser.add_argument("--server", metavar="S", help="MCP server name (for server-qualified rules)")
    parser.add_argument("--args", metavar="JSON", help="arguments as a JSON object, e.g. '{\"amount\": 5}'")
    parser.add_argument("--identity", metavar="ID", help="caller identity (scope key of grant/identity limits)")
    parser.add_argument("--session", metavar="ID", help="session or thread id (scope key of session limits)")
    parser.add_argument(
        "--annotations", metavar="JSON", help="MCP tool annotations as JSON, e.g. '{\"readOnlyHint\": true}'"
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="TEXT",
        help="the user's request in this session (repeat for several); read by from: [user]",
    )
    parser.add_argument(
        "--history",
        metavar="FILE",
        help="the session so far (JSON or YAML list): {user: TEXT} items and earlier calls "
        "{tool, args, server, annotations, result}, replayed through the policy before this call",
    )
    parser.add_argument("--context", metavar="JSON", help="the framework's context as JSON (context.* conditions)")
    parser.add_argument("--claims", metavar="JSON", help="a token's claims as JSON (claims.* conditions)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def _session_view(policy: Policy, history: str | None, users: Sequence[str]) -> Any:
    """The session view after replaying ``history`` and the ``--user`` texts through a guard (memory store)."""
    from mcp_guard._guard.guard import Guard

    items: Any = []
    if history is not None:
        path = Path(history)
        try:
            raw = path.read_bytes()
            items = parse_json(raw, history) if path.suffix.lower() == ".json" else parse_yaml(raw, history)
        except OSError as exc:
            raise SystemExit(f"mcp-guard explain: cannot read --history {history}: {exc.strerror or exc}") from None
        except PolicyError as exc:
            raise SystemExit(f"mcp-guard explain: --history {history}: {' '.join(str(exc).split())}") from None
        if isinstance(items, Mapping) and "history" in items:
            items = items["history"]
    if not isinstance(items, list):
        raise SystemExit("mcp-guard explain: --history must hold a list of {user: TEXT} and {tool: NAME, ...} items")
    guard = Guard(policy, retry=False)
    key = "explain"
    for text in users:
        guard.observe_input(text, session=key)
    for n, item in enumerate(items):
        if isinstance(item, Mapping) and isinstance(item.get("user"), str) and len(item) == 1:
            guard.observe_input(item["user"], session=key)
            continue
        known = {"tool", "args", "server", "annotations", "result"}
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("tool"), str)
            and set(item) <= known
            and isinstance(item.get("args", {}), Mapping)
            and isinstance(item.get("server", ""), (str, type(None)))
            and isinstance(item.get("annotations", {}), (Mapping, type(None)))
        ):
            raise SystemExit(
                f"mcp-guard explain: --history item {n} must be {{user: TEXT}} or {{tool: NAME, args: {{...}}, "
                "server: NAME, annotations: {...}, result: ...}"
            )
        returned = item.get("result", "ok")
        guard.run(
            item["tool"],
            dict(item.get("args", {})),
            lambda _value=returned, **_: _value,
            server=item.get("server"),
            annotations=item.get("annotations"),
            session=key,
        )
    return guard.session_view(key)


def explain_dict(policy: Policy, decision: Decision) -> dict[str, Any]:
    """A decision as the JSON object ``explain --json`` prints."""
    out: dict[str, Any] = {
        "tool": decision.tool,
        "server": decision.server,
        "action": decision.action,
        "code": decision.code,
        "rule": decision.rule,
        "reason": decision.reason,
        "risk_class": decision.risk_class,
        "limits": [
            {
                "counter": c.counter,
                "scope": c.scope,
                "scope_key": c.scope_id,
                "max": c.max,
                "window_s": c.window_s,
                "cost": c.cost,
                "count_failures": c.count_failures,
                "rule": c.rule,
            }
            for c in decision.limits
        ],
        "policy": policy.hash,
    }
    if decision.needs_approval:
        out["approval_timeout_s"] = decision.approval_timeout_s
        out["approval_description"] = decision.approval_description
    if decision.denied:
        out["payload"] = decision.to_payload()
    description = _rule_description(policy, decision.rule)
    if description:
        out["description"] = description
    return out


def _rule_description(policy: Policy, pointer: str | None) -> str | None:
    if not pointer:
        return None
    parts = pointer.split("/")
    node = policy.rule_at("/".join(parts[:3]))
    if isinstance(node, Mapping) and isinstance(node.get("description"), str):
        return str(node["description"])
    return None


def _window(seconds: float) -> str:
    words = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
    return words.get(seconds) or f"{seconds:g} s"


def _explain_text(info: Mapping[str, Any]) -> str:
    lines = [f"tool:      {info['tool']}" + (f" (server {info['server']})" if info["server"] else "")]
    lines.append(f"decision:  {info['action']}" + (f" ({info['code']})" if info["code"] else ""))
    lines.append(f"rule:      {info['rule']}")
    if info.get("description"):
        lines.append(f"about:     {info['description']}")
    if info["reason"]:
        lines.append(f"reason:    {info['reason']}")
    if info["risk_class"]:
        lines.append(f"class:     {info['risk_class']}")
    if info.get("approval_timeout_s") is not None:
        lines.append(f"approval:  times out after {info['approval_timeout_s']:g} s")
    if info["limits"]:
        lines.append("limits:")
        for lim in info["limits"]:
            unit = (
                ("call" if lim["max"] == 1 else "calls")
                if lim["cost"] == 1
                else ("unit" if lim["max"] == 1 else "units")
            )
            lines.append(
                f"  - counter {lim['counter']!r}, scope {lim['scope']} (key {lim['scope_key']!r}): "
                f"{lim['max']} {unit} per {_window(lim['window_s'])}, this call costs {lim['cost']}"
                + (", failures count" if lim["count_failures"] else "")
                + f"  [{lim['rule']}]"
            )
    elif info["action"] != "deny":
        lines.append("limits:    none")
    if "payload" in info:
        lines.append("the model sees:")
        lines.append("  " + json.dumps(info["payload"], ensure_ascii=False))
    lines.append(f"policy:    {info['policy']}")
    return "\n".join(lines)


def _run_explain(args: argparse.Namespace) -> int:
    """show what the policy decides for one call (exit 0 admitted, 3 refused, 4 needs approval)

    Evaluate one call against a policy (steps 1-3: hide, rule, conditions) and print the decision, its code, the
    rule pointer, the reason and each limit the call would be charged. Counts nothing: limits are shown, not
    checked. The exit status says the verdict, for scripts and CI: 0 the call would be admitted, 3 refused, 4 held
    for a human's approval.
    """
    call_args = _json_arg(args.args, "args")
    annotations = _json_arg(args.annotations, "annotations")
    context, claims = _json_arg(args.context, "context"), _json_arg(args.claims, "claims")
    policy = _load(args.file)
    if isinstance(policy, int):
        return policy
    view = _session_view(policy, args.history, args.user) if args.history or args.user else None
    decision = _evaluate(policy, args, call_args, annotations, view, context, claims)
    info = explain_dict(policy, decision)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        console = _console(sys.stdout)
        if console is None:
            print(_explain_text(info))
        else:
            _explain_rich(console, info)
    if decision.denied:
        return EXIT_REFUSED
    return EXIT_APPROVAL if decision.needs_approval else EXIT_OK


def _explain_rich(console: Any, info: Mapping[str, Any]) -> None:
    """The same facts as :func:`_explain_text`, as rich tables with the verdict in colour."""
    from rich.table import Table
    from rich.text import Text  # cells are Text, never markup: names and reasons come from the policy file

    colour = {"allow": "green", "deny": "red", "require_approval": "yellow"}[info["action"]]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("tool", Text(f"{info['tool']}" + (f" (server {info['server']})" if info["server"] else "")))
    verdict = Text(info["action"], style=colour)
    if info["code"]:
        verdict.append(f" ({info['code']})")
    facts.add_row("decision", verdict)
    for label, key in (("rule", "rule"), ("about", "description"), ("reason", "reason"), ("class", "risk_class")):
        if info.get(key):
            facts.add_row(label, Text(str(info[key])))
    if info.get("approval_timeout_s") is not None:
        facts.add_row("approval", f"times out after {info['approval_timeout_s']:g} s")
    facts.add_row("policy", Text(info["policy"]))
    console.print(facts)
    if info["limits"]:
        table = Table(title="limits this call is charged", title_justify="left")
        for col in ("counter", "scope (key)", "max per window", "cost", "failures count", "rule"):
            table.add_column(col)
        for lim in info["limits"]:
            cells = (
                lim["counter"],
                f"{lim['scope']} ({lim['scope_key']})",
                f"{lim['max']} per {_window(lim['window_s'])}",
                str(lim["cost"]),
                "yes" if lim["count_failures"] else "no",
                lim["rule"],
            )
            table.add_row(*(Text(c) for c in cells))
        console.print(table)
    if "payload" in info:
        console.print("the model sees:", style="bold")
        console.print_json(json.dumps(info["payload"], ensure_ascii=False))


# -- schema --------------------------------------------------------------------------------------------


def _add_schema(subparsers: Any) -> argparse.ArgumentParser:
    parser = command(subparsers, "schema", _run_schema)
    parser.add_argument("--cases", action="store_true", help="the schema of an 'mcp-guard test' case file instead")
    return parser


def _run_schema(args: argparse.Namespace) -> int:
    """print the JSON Schema of a policy document (for editor completion)

    Print the policy JSON Schema. Save it (mcp-guard schema > policy.schema.json) and point a policy at it with
    "$schema": "./policy.schema.json" (JSON) or a "# yaml-language-server: $schema=./policy.schema.json" comment
    (YAML) for completion and checks in the editor.
    """
    schema = living.cases_schema() if getattr(args, "cases", False) else Policy.json_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


# -- init (lives in _cli/init.py) ----------------------------------------------------------------------


def _add_init(subparsers: Any) -> argparse.ArgumentParser:
    from mcp_guard._cli.init import add_init_parser

    return add_init_parser(subparsers)


# -- proxy (lives in _cli/proxy.py) ------------------------------------------------------------------------


def _add_proxy(subparsers: Any) -> argparse.ArgumentParser:
    from mcp_guard._cli.proxy import add_proxy_parser

    return add_proxy_parser(subparsers)


def _add_pin(subparsers: Any) -> argparse.ArgumentParser:
    from mcp_guard._cli.pin import add_pin_parser

    return add_pin_parser(subparsers)


#: Every subcommand, in the order ``--help`` lists them. Each adds its parser and sets ``func``.
SUBCOMMANDS: list[AddCommand] = [_add_validate, _add_explain, _add_schema, _add_init, _add_pin, _add_proxy]
SUBCOMMANDS.append(add_inbox_parser)  # mcp-guard inbox (_cli_inbox.py)
SUBCOMMANDS += living.COMMANDS  # test, usage, audit (mcp_guard._cli.living)


def build_parser() -> argparse.ArgumentParser:
    from mcp_guard._version import __version__

    parser = argparse.ArgumentParser(
        prog="mcp-guard",
        description="One policy between AI agents and the MCP tools they call.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"mcp-guard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to ``sys.exit``)."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    func: Callable[[argparse.Namespace], int] = args.func
    one_line_logging(getattr(args, "subcommand", None))  # what libraries log: one line each, no traceback
    try:
        return func(args)
    except BrokenPipeError:
        # The reader went away (``mcp-guard schema | head``): stop quietly, as shell tools do. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, never a traceback in a user's terminal
        print(f"mcp-guard: internal error ({type(exc).__name__}: {exc}); please report it", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
