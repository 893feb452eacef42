"""The ``mcp-guard`` command: ``validate``, ``explain``, ``schema`` (and ``init``, from :mod:`mcp_guard._scaffold`).

Subcommands are registered in :data:`SUBCOMMANDS`: each entry takes the ``subparsers`` object, adds its
parser and sets ``func`` (a ``Namespace -> int`` exit code). Adding a command is one entry.

Exit codes: 0 success; 1 the policy does not validate; 2 bad command-line input or a missing extra
(argparse's convention). The CLI needs no extra except ``yaml`` for YAML files and ``init``'s own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mcp_guard._decision import Decision
from mcp_guard._errors import MissingExtraError, PolicyError
from mcp_guard._inbox_web import add_inbox_parser
from mcp_guard._matching import Pattern, parse_pattern, pointer
from mcp_guard._policy import Policy

AddCommand = Callable[[Any], argparse.ArgumentParser]


# -- validate ------------------------------------------------------------------------------------------


def _shadows(hide: Pattern, rule: Pattern) -> bool:
    """Whether ``hide`` matches every (server, name) that ``rule`` matches (exact names and ``*`` suffice)."""
    if hide.server is not None and hide.server != rule.server:
        return False  # a qualified hide covers one server; an unqualified rule reaches every server
    if rule.exact:
        return hide.matches(rule.name, rule.server)
    return hide.name == "*" or hide.name == rule.name


def policy_warnings(policy: Policy) -> list[str]:
    """Rules that can never apply, and other things that are valid but almost certainly not meant."""
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
    return out


def _add_validate(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "validate",
        help="check a policy file; exit 0 when valid, 1 when not",
        description="Load a policy (JSON or YAML) and report every problem with its field path. Also warns about "
        "rules that can never apply.",
    )
    parser.add_argument("file", metavar="FILE", help="policy file (.json, .yaml or .yml)")
    parser.set_defaults(func=_run_validate)
    return parser


def _load(path: str) -> Policy | int:
    """The policy at ``path``, or the exit code after printing why it could not be loaded."""
    try:
        return Policy.load(path)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except MissingExtraError as exc:
        print(f"mcp-guard: {exc}", file=sys.stderr)
        return 2


def _run_validate(args: argparse.Namespace) -> int:
    policy = _load(args.file)
    if isinstance(policy, int):
        return policy
    for warning in policy_warnings(policy):
        print(f"warning: {warning}", file=sys.stderr)
    doc = policy.document
    label = f" ({policy.name})" if policy.name else ""
    print(
        f"{args.file}{label}: valid; {_count(len(doc.tools), 'tool rule')}, {_count(len(doc.hide), 'hidden pattern')}, "
        f"{_count(len(doc.classes), 'class rule')}, default {doc.default}; {policy.hash}"
    )
    return 0


# -- explain -------------------------------------------------------------------------------------------


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"mcp-guard explain: --{what} is not valid JSON: {exc}") from None


def _add_explain(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="show what the policy decides for one call",
        description="Evaluate one call against a policy (steps 1-3: hide, rule, conditions) and print the "
        "decision, its code, the rule pointer, the reason and each limit the call would be charged. Counts "
        "nothing: limits are shown, not checked.",
    )
    parser.add_argument("file", metavar="FILE", help="policy file (.json, .yaml or .yml)")
    parser.add_argument("--tool", required=True, metavar="NAME", help="tool name, exactly as the server gives it")
    parser.add_argument("--server", metavar="S", help="MCP server name (for server-qualified rules)")
    parser.add_argument("--args", metavar="JSON", help="arguments as a JSON object, e.g. '{\"amount\": 5}'")
    parser.add_argument("--identity", metavar="ID", help="caller identity (scope key of grant/identity limits)")
    parser.add_argument("--session", metavar="ID", help="session or thread id (scope key of session limits)")
    parser.add_argument(
        "--annotations", metavar="JSON", help="MCP tool annotations as JSON, e.g. '{\"readOnlyHint\": true}'"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(func=_run_explain)
    return parser


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
            unit = "calls" if lim["cost"] == 1 else "units"
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
    call_args = _json_arg(args.args, "args")
    annotations = _json_arg(args.annotations, "annotations")
    if annotations is not None and not isinstance(annotations, Mapping):
        print("mcp-guard explain: --annotations must be a JSON object", file=sys.stderr)
        return 2
    policy = _load(args.file)
    if isinstance(policy, int):
        return policy
    decision = policy.evaluate(
        args.tool,
        call_args,
        server=args.server,
        identity=args.identity,
        session=args.session,
        annotations=annotations,
    )
    info = explain_dict(policy, decision)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        print(_explain_text(info))
    return 0


# -- schema --------------------------------------------------------------------------------------------


def _add_schema(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schema", help="print the JSON Schema of a policy document", description="Print the policy JSON Schema."
    )
    parser.set_defaults(func=_run_schema)
    return parser


def _run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Policy.json_schema(), indent=2, ensure_ascii=False))
    return 0


# -- init (lives in _scaffold.py) ----------------------------------------------------------------------


def _add_init(subparsers: Any) -> argparse.ArgumentParser:
    from mcp_guard._scaffold import add_init_parser

    return add_init_parser(subparsers)


# -- proxy (lives in _proxy.py) ------------------------------------------------------------------------


def _add_proxy(subparsers: Any) -> argparse.ArgumentParser:
    from mcp_guard._proxy import add_proxy_parser

    return add_proxy_parser(subparsers)


#: Every subcommand, in the order ``--help`` lists them. Each adds its parser and sets ``func``.
SUBCOMMANDS: list[AddCommand] = [_add_validate, _add_explain, _add_schema, _add_init, _add_proxy]
SUBCOMMANDS.append(add_inbox_parser)  # mcp-guard inbox (_inbox_web.py)


def build_parser() -> argparse.ArgumentParser:
    from mcp_guard import __version__

    parser = argparse.ArgumentParser(
        prog="mcp-guard",
        description="One policy between AI agents and the MCP tools they call.",
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
            return 2
        return int(exc.code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
