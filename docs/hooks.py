"""MkDocs hooks: the reference pages are generated from the code at build time, so they cannot drift.

A page holds a marker line, ``<!-- generated: NAME -->``, and the build replaces it with:

* ``policy-fields``: one table per policy object (the document, a rule, ``all_tools``, a limit, ``approval``),
  read from the policy's JSON Schema, which pydantic builds from the model (``Policy.json_schema()``): every
  field, its type, its default and its description;
* ``condition-ops``: the condition operators (``mcp_guard._policy.conditions.OPERATORS``) and condition paths;
* ``codes``: the refusal codes (``mcp_guard.CODES``);
* ``cli``: ``mcp-guard --help`` and every subcommand's ``--help``, as argparse prints them.

A field, operator or code with no description here or in the model fails the build (``mkdocs build --strict``
runs in ``make test``), and ``tests/docs/test_site.py`` checks that every one of them is on the page.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from typing import Any

MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)

# What each operator checks, with an example: the model has only the names, so they are described here, and a new
# operator without a line here stops the build.
OPERATORS: dict[str, tuple[str, str]] = {
    "eq": (
        'equals, with the same JSON type (`true` is not `1` or `"true"`; `1` equals `1.0`)',
        '{"args.side": {"eq": "buy"}}',
    ),
    "neq": ("does not equal", '{"args.asset": {"neq": "USD"}}'),
    "in": ("is one of the list", '{"args.symbol": {"in": ["BTCUSD", "ETHUSD"]}}'),
    "not_in": ("is none of the list", '{"identity": {"not_in": ["guest", "anonymous"]}}'),
    "lt": ("is a number less than", '{"args.qty": {"lt": 100}}'),
    "lte": ("is a number less than or equal to", '{"args.qty": {"lte": 100}}'),
    "gt": ("is a number greater than", '{"args.amount": {"gt": 1000}}'),
    "gte": ("is a number greater than or equal to", '{"args.amount": {"gte": 1000}}'),
    "regex": (
        "matches the regular expression, RE2 syntax, searched (anchor it with `^...$`); linear time",
        '{"args.address": {"regex": "^0x[0-9a-fA-F]{40}$"}}',
    ),
    "glob": ("matches the glob (only `*` is a wildcard, as in tool patterns)", '{"identity": {"glob": "guest*"}}'),
    "contains": (
        "(a string) contains the substring, or (a list) contains the item",
        '{"args.path": {"contains": ".."}}',
    ),
    "exists": (
        "is present (`true`) or absent (`false`); an explicit `null` is absent",
        '{"args.price": {"exists": false}}',
    ),
    "not_regex": (
        "does not match the regular expression (a value of the wrong type still counts against the call)",
        '{"args.branch": {"not_regex": "^release/"}}',
    ),
    "not_glob": (
        "does not match the glob (a value of the wrong type still counts against the call)",
        '{"args.url": {"not_glob": "https://example.com/*"}}',
    ),
    "not_contains": (
        "(a string) does not contain the substring, or (a list) does not contain the item",
        '{"args.path": {"not_contains": ".."}}',
    ),
    "any": (
        "(a list) has an element that satisfies the inner condition",
        '{"args.to": {"any": {"glob": "*@competitor.com"}}}',
    ),
    "all": (
        "(a list) has only elements that satisfy the inner condition",
        '{"args.to": {"all": {"glob": "*@example.com"}}}',
    ),
    "from": (
        "came from the named sources of this session: `user`, `trusted`, `untrusted` or a tool pattern "
        "([sessions guide](../guides/sessions.md#provenance-from-not_from))",
        '{"args.iban": {"from": ["user", "trusted"]}}',
    ),
    "not_from": (
        "did not come from the named sources of this session",
        '{"args.url": {"not_from": ["untrusted"]}}',
    ),
    "detect": (
        "(a string) holds something a built-in detector flags: `secrets`, `pii`",
        '{"args.body": {"detect": ["pii"]}}',
    ),
    "no_secrets": (
        "(in `require` only) holds no secret this session saw in a tool result",
        '{"args.body": {"no_secrets": true}}',
    ),
}

PATHS: dict[str, str] = {
    "args.<name>[.<name>...]": "an argument, dotted into objects and list indexes (`args.order.items.0.qty`)",
    "identity": "the caller's identity",
    "session": "the agent session or thread",
    "server": "the MCP server's name",
    "tool": "the tool's name",
    "claims.<name>[.<name>...]": "the caller's verified token claims (the proxy's `--jwt-keys`, or `claims=` given to "
    "the Guard; [identity guide](../guides/identity.md))",
    "context.<name>[.<name>...]": "the framework's context object (LangChain's runtime context, the Agents SDK's run "
    "context, or `context=` given to the Guard): mapping keys, pydantic and dataclass fields, an object's own "
    "attributes; never a method or property",
    "session.tools": "names of the tools that ran in this session, in order",
    "session.classes": "the risk classes of the tools that ran in this session",
    "session.untrusted": "`true` once an untrusted result was seen in this session",
    "session.calls": "how many tool calls ran in this session",
}

CODES: dict[str, str] = {
    "hidden": "the tool is hidden by `hide`",
    "denied": "a rule with `action: deny`, or a firing `deny_if`",
    "default_deny": "no rule matched and `default` is `deny`",
    "invalid_arguments": "the arguments fail `args_schema`, the tool's own schema, or hold NaN / Infinity",
    "requirement_failed": "a `require` check failed",
    "rate_limited": "a limit has no room (`retry_after_s` says when it will, unless the call can never fit)",
    "approval_required": "a human must approve and the guard has no approver",
    "approval_denied": "the approver declined, failed, or edited the call into one that is refused",
    "approval_timeout": "nobody decided within the approval timeout",
    "guard_unavailable": "the guard itself could not decide (store down, audit write failed in closed mode)",
    "untrusted_argument": "an argument does not come from the sources a `from` / `not_from` check names "
    "([sessions](../guides/sessions.md))",
    "secret_egress": "an argument holds a secret this session saw (`no_secrets`)",
    "result_withheld": "a result rule's `withhold` held what the tool returned back from the model (the tool ran)",
    "tool_changed": "the tool's listing differs from the pinned lock, or the lock does not name it "
    "([pinning](../guides/pinning.md))",
    "identity_required": "a rule reads `identity`, `claims.*` or `context.*` and the call has no such value "
    "([identity](../guides/identity.md))",
}

# The objects of a policy, in reading order: (title, JSON Schema name, how it is reached).
OBJECTS = (
    ("The policy document", None, "the top level of the file"),
    ("Rule", "Rule", "a value of `tools` or `classes`"),
    ("all_tools", "AllTools", "the value of `all_tools`: a rule's checks and limits, no `action` or `reason`"),
    ("Limit", "Limit", "an item of a rule's `limits`"),
    ("Approval", "Approval", "a rule's `approval`"),
    ("Result rules", "ResultRules", "a rule's `result` (also on `all_tools`; [sessions](../guides/sessions.md))"),
    ("Pins", "Pins", "the value of `pins` ([pinning](../guides/pinning.md))"),
)


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema fragment as a short type: `"allow" | "deny"`, `integer >= 0`, `list of Limit`..."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [_type(s, defs) for s in schema[key] if s.get("type") != "null"]
            return " \\| ".join(dict.fromkeys(parts))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " \\| ".join(str(k) for k in kind)
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), defs)}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"map of {_type(values, defs)}"
        return "object (JSON Schema)" if schema.get("title") == "Args Schema" else "object"
    bounds = []
    for key, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            bounds.append(f"{symbol} {schema[key]}")
    return " ".join([str(kind or "any"), *bounds])


def policy_fields() -> str:
    from mcp_guard import Policy

    schema = Policy.json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    out: list[str] = []
    for title, name, reached in OBJECTS:
        obj = schema if name is None else defs[name]
        required = set(obj.get("required", []))
        out += [f"### {title}", "", f"{reached[0].upper()}{reached[1:]}. {obj.get('description', '')}".strip(), ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for field, prop in obj["properties"].items():
            description = prop.get("description")
            if not description:
                raise ValueError(f"the policy model has no description for {name or 'the document'}.{field}")
            default = "required" if field in required else json.dumps(prop["default"]) if "default" in prop else "-"
            out.append(f"| `{field}` | {_type(prop, defs)} | {default} | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def condition_ops() -> str:
    from mcp_guard._policy.conditions import CONTEXT_PATHS
    from mcp_guard._policy.conditions import OPERATORS as MODEL_OPERATORS

    missing = set(MODEL_OPERATORS) - set(OPERATORS)
    if missing or set(OPERATORS) - set(MODEL_OPERATORS):
        raise ValueError(f"docs/hooks.py describes operators {sorted(OPERATORS)}; the model has {MODEL_OPERATORS}")
    if set(CONTEXT_PATHS) - set(PATHS):
        raise ValueError(f"docs/hooks.py does not describe condition paths {set(CONTEXT_PATHS) - set(PATHS)}")
    out = ["| operator | holds when the value... | example |", "|---|---|---|"]
    out += [f"| `{op}` | {OPERATORS[op][0]} | `{OPERATORS[op][1]}` |" for op in MODEL_OPERATORS]
    out += ["", "| path | the value |", "|---|---|"]
    out += [f"| `{path}` | {meaning} |" for path, meaning in PATHS.items()]
    return "\n".join(out) + "\n"


def codes() -> str:
    from mcp_guard import CODES as MODEL_CODES

    if set(MODEL_CODES) != set(CODES):
        raise ValueError(f"docs/hooks.py describes codes {sorted(CODES)}; the model has {MODEL_CODES}")
    out = ["| code | when |", "|---|---|"]
    out += [f"| `{code}` | {CODES[code]} |" for code in MODEL_CODES]
    return "\n".join(out) + "\n"


def cli() -> str:
    from mcp_guard._cli.main import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page has one width
    try:
        parser = build_parser()
        out = ["## mcp-guard", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subcommands(parser):
            out += [f"## mcp-guard {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(out)


def _subcommands(parser: Any) -> Iterator[tuple[str, Any]]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


GENERATORS: dict[str, Callable[[], str]] = {
    "policy-fields": policy_fields,
    "condition-ops": condition_ops,
    "codes": codes,
    "cli": cli,
}


def render(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated text (an unknown marker is an error)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
        with redirect_stdout(io.StringIO()):  # nothing a generator imports may print into the build log
            return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: every page goes through :func:`render`."""
    return render(markdown)
