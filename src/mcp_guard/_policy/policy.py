"""The :class:`Policy`: a validated policy compiled for fast, pure evaluation (spec sections 3 and 4, steps 1-3).

Everything that can be decided at load is decided at load: exact names go in a dict, globs are compiled,
conditions become closures, JSON Schemas become fastjsonschema validators. The resolution of a
(server, tool, risk class) to the rules that apply is memoised in a bounded dict, and a rule whose outcome
cannot depend on the arguments or the caller returns a :class:`Decision` built once.

``evaluate`` is pure: no I/O, no clock, no callbacks. The guard (:mod:`mcp_guard._guard.guard`) does the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from mcp_guard._errors import PolicyError
from mcp_guard._policy.argcheck import non_finite_path
from mcp_guard._policy.caller import CallerMissing, caller_view, reads_caller_object
from mcp_guard._policy.conditions import (
    MISSING,
    THROUGH,
    Check,
    Kind,
    ViewCheck,
    args_getter,
    compile_conditions,
    compile_view_conditions,
    describe_type,
)
from mcp_guard._policy.decision import Action, Code, Decision, LimitCharge, Scope
from mcp_guard._policy.fields import FieldLabel, compile_results
from mcp_guard._policy.matching import GlobIndex, Pattern, parse_pattern, pointer
from mcp_guard._policy.model import (
    MAX_POLICY_BYTES,
    WINDOWS,
    AllTools,
    Conditions,
    Limit,
    PolicyDocument,
    Rule,
    canonical_json,
    check_size,
    compile_schema,
    input_error,
    json_schema,
    parse_json,
    parse_yaml,
    policy_error,
    validate_document,
)
from mcp_guard._policy.results import ResultRule, compile_result_rules
from mcp_guard._policy.session import EMPTY_VIEW, SessionView, Trust

_NO_CALLER: Mapping[str, Any] = MappingProxyType({})  # the caller view of a plan without caller checks
_STRICTNESS = {"allow": 0, "require_approval": 1, "deny": 2}
_CACHE_MAX = 10_000  # resolutions memoised per policy; names are model-supplied, so the memo is bounded
_CALLER_CACHE_MAX = 1_024  # per-rule decisions memoised per (identity, session)
_CALLERS_CACHED_MAX = 100_000  # and across all rules of one policy, so memory stays bounded
_REFUSALS_MAX = 64  # refusals memoised per plan: a check's reasons are a small fixed set (no values in them)

log = logging.getLogger("mcp_guard")
# Argument values that cannot hold NaN or Infinity: the NaN screen skips them without walking.
_FLAT_LEAVES = frozenset({str, int, bool, type(None)})

Args = Mapping[str, Any]


def risk_class(annotations: Mapping[str, Any] | None) -> str | None:
    """The risk class of a tool from its MCP annotations, with MCP's defaults; ``None`` without annotations.

    ``readOnlyHint`` true -> ``read``; else ``destructiveHint`` (default true) -> ``destructive``; else
    ``openWorldHint`` (default true) -> ``open_world``; else ``write``. A hint that is not a boolean counts as
    its default (the stricter reading).
    """
    if not annotations or not isinstance(annotations, Mapping):
        return None
    if annotations.get("readOnlyHint") is True:
        return "read"
    if annotations.get("destructiveHint", True) is not False:
        return "destructive"
    if annotations.get("openWorldHint", True) is not False:
        return "open_world"
    return "write"


@dataclass(frozen=True, slots=True)
class _LimitSpec:
    counter: str
    scope: Scope
    window_s: float
    max: int
    cost: int
    cost_path: str | None
    rule: str
    count_failures: bool
    cost_get: Callable[[Args], object] | None = None

    @property
    def per_caller(self) -> bool:
        return self.scope in ("grant", "identity", "session")

    def scope_id(self, tool: str, server: str | None, identity: str | None, session: str | None) -> str:
        if self.scope in ("grant", "identity"):
            return "anonymous" if identity is None else str(identity)
        if self.scope == "session":
            return "anonymous" if session is None else str(session)
        if self.scope == "global":
            return ""
        return f"{server}/{tool}" if server is not None else tool

    def charge(
        self, tool: str, server: str | None, identity: str | None, session: str | None, cost: int | None = None
    ) -> LimitCharge:
        return LimitCharge(
            counter=self.counter,
            scope=self.scope,
            scope_id=self.scope_id(tool, server, identity, session),
            window_s=self.window_s,
            max=self.max,
            cost=self.cost if cost is None else cost,
            rule=self.rule,
            count_failures=self.count_failures,
        )

    def cost_of(self, args: Args) -> int | str:
        """The cost for these arguments, or the reason it cannot be read."""
        if self.cost_get is None:
            return self.cost
        value = self.cost_get(args)
        if value is MISSING:
            return f"{self.cost_path} is missing; it sets the cost of this call"
        if value is THROUGH:
            return f"{self.cost_path} cannot be read (part of the path is not an object); it sets the cost of this call"
        if type(value) is int and value >= 0:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            # The type, never the value: arguments may be secrets.
            shown = "a negative number" if describe_type(value) == "a number" else describe_type(value)
            return f"{self.cost_path} must be a non-negative number (it sets the cost of this call), got {shown}"
        return math.ceil(value)


@dataclass(slots=True)
class _Rule:
    """One compiled rule (tool pattern, class, all_tools or default)."""

    pointer: str
    action: Action
    reason: str | None = None
    schema: tuple[str, Callable[[object], object]] | None = None
    require: tuple[tuple[str, Check], ...] = ()
    deny_if: tuple[tuple[str, Check], ...] = ()
    approve_if: tuple[tuple[str, Check], ...] = ()
    limits: tuple[_LimitSpec, ...] = ()
    redact: tuple[str, ...] = ()
    approval_timeout_s: float | None = None
    approval_description: str | None = None
    pattern: Pattern | None = None
    order: int = 0
    retry: bool | None = None
    reads_args: bool = False  # a condition reads an argument path
    # Checks that read the session view (provenance, session.*, no_secrets): (pointer, check, code or None).
    vrequire: tuple[tuple[str, ViewCheck, str | None], ...] = ()
    vdeny_if: tuple[tuple[str, ViewCheck, str | None], ...] = ()
    vapprove_if: tuple[tuple[str, ViewCheck, str | None], ...] = ()
    results: Trust | None = None  # the rule's trust label for what its tools return
    result_fields: tuple[FieldLabel, ...] = ()  # labels of parts of a structured result (``results`` as a map)
    result_rules: tuple[ResultRule, ...] = ()
    needs: frozenset[str] = frozenset()  # session memory parts its checks read: texts, calls, secrets
    # Checks that read claims.* / context.*: given the caller view in place of the arguments.
    caller: tuple[tuple[Kind, str, Check], ...] = ()


def _window_s(window: float | str) -> float:
    return WINDOWS[window] if isinstance(window, str) else float(window)


def _parse_rate(text: str) -> tuple[int, float]:
    count, _, unit = text.partition("/")
    window = WINDOWS[unit] if unit in WINDOWS else float(unit.rstrip("s"))
    return int(count), window


def compile_rule(
    rule: Rule | AllTools, ptr: str, label: str, action: Action, reason: str | None, order: int = 0
) -> _Rule:
    redact = tuple(rule.redact)

    def conds(block: Conditions, kind: Kind, caller: bool = False) -> tuple[tuple[str, Check], ...]:
        part = {p: ops for p, ops in block.items() if reads_caller_object(p) is caller}
        return compile_conditions(part, kind, f"{ptr}/{kind}")

    limits: list[_LimitSpec] = []
    for i, lim in enumerate(rule.limits):
        limits.append(_limit_spec(lim, f"{ptr}/limits/{i}", f"{label}:limits/{i}"))
    if rule.rate_limit is not None:
        count, window = _parse_rate(rule.rate_limit)
        limits.append(_LimitSpec(f"{label}:rate_limit", "grant", window, count, 1, None, f"{ptr}/rate_limit", False))
    schema = None
    if rule.args_schema is not None:
        schema = (f"{ptr}/args_schema", compile_schema(canonical_json(rule.args_schema)))
    approval = rule.approval
    vconds = {
        "require": compile_view_conditions(rule.require, "require", f"{ptr}/require"),
        "deny_if": compile_view_conditions(rule.deny_if, "deny_if", f"{ptr}/deny_if"),
        "approve_if": compile_view_conditions(rule.approve_if, "approve_if", f"{ptr}/approve_if"),
    }
    needs: set[str] = set()
    for block in (rule.require, rule.deny_if, rule.approve_if):
        needs.update(_session_needs(block))
    results, result_fields = compile_results(getattr(rule, "results", None))
    return _Rule(
        pointer=ptr,
        action=action,
        reason=reason,
        schema=schema,
        require=conds(rule.require, "require"),
        deny_if=conds(rule.deny_if, "deny_if"),
        approve_if=conds(rule.approve_if, "approve_if"),
        limits=tuple(limits),
        redact=redact,
        approval_timeout_s=None if approval is None or approval.timeout_s is None else float(approval.timeout_s),
        approval_description=None if approval is None else approval.description,
        order=order,
        retry=getattr(rule, "retry", None),
        reads_args=any(
            path.startswith("args.") for block in (rule.require, rule.deny_if, rule.approve_if) for path in block
        ),
        vrequire=vconds["require"],
        vdeny_if=vconds["deny_if"],
        vapprove_if=vconds["approve_if"],
        results=results,
        result_fields=result_fields,
        result_rules=compile_result_rules(rule.result, f"{ptr}/result") if rule.result is not None else (),
        needs=frozenset(needs),
        caller=tuple(("require", p, c) for p, c in conds(rule.require, "require", caller=True))
        + tuple(("deny_if", p, c) for p, c in conds(rule.deny_if, "deny_if", caller=True))
        + tuple(("approve_if", p, c) for p, c in conds(rule.approve_if, "approve_if", caller=True)),
    )


def _session_needs(block: Conditions) -> set[str]:
    """The parts of session memory a condition block reads: ``texts`` (provenance), ``calls`` (``session.*``),
    ``secrets`` (``no_secrets``)."""
    needs: set[str] = set()
    stack: list[tuple[str, Mapping[str, object]]] = list(block.items())
    while stack:
        path, ops = stack.pop()
        if path.startswith("session."):
            needs.add("calls")
        for op, value in ops.items():
            if op in ("from", "not_from"):
                needs.add("texts")
            elif op == "no_secrets":
                needs.add("secrets")
            elif op in ("any", "all") and isinstance(value, Mapping):
                stack.append(("", value))
    return needs


def _limit_spec(lim: Limit, ptr: str, default_counter: str) -> _LimitSpec:
    cost_path = lim.cost if isinstance(lim.cost, str) else None
    return _LimitSpec(
        counter=lim.counter if lim.counter is not None else default_counter,
        scope=lim.scope,
        window_s=_window_s(lim.window),
        max=lim.max,
        cost=1 if cost_path else int(lim.cost),
        cost_path=cost_path,
        rule=ptr,
        count_failures=lim.count_failures,
        cost_get=args_getter(cost_path) if cost_path else None,
    )


@dataclass(slots=True)
class _Plan:
    """What applies to one (server, tool, risk class): a constant decision, or the checks to run."""

    tool: str
    server: str | None
    kind: str  # "hidden" | "deny" | "run"
    decision: Decision  # hidden / deny: the answer; run: the answer when every check passes
    deciding_rule: _Rule | None = None  # the matched rule whose action applies
    rules: tuple[_Rule, ...] = ()  # all_tools first, then the matched (tied) rules
    schemas: tuple[tuple[str, Callable[[object], object], _Rule], ...] = ()
    # require, then deny_if: (pointer, check, code, the refusals it has given, by reason). A reason quotes no
    # argument value, so each check gives a few fixed texts and each refusal is built once, on first use.
    checks: tuple[tuple[str, Check, Code, dict[str, Decision]], ...] = ()
    approve_if: tuple[tuple[str, Check, _Rule], ...] = ()
    limits: tuple[_LimitSpec, ...] = ()
    per_caller: bool = False  # limits depend on identity / session
    per_args: bool = False  # a limit's cost is read from the arguments
    constant: bool = False  # no checks, no per-call limits: ``decision`` is always the answer
    checks_only: bool = False  # only require / deny_if and per-caller limits: no schema, approve_if or cost path
    reads_args: bool = False  # a check, schema or cost reads the arguments: NaN / Infinity must be refused first
    by_caller: dict[tuple[str | None, str | None], Decision] = field(default_factory=dict)
    refusals: dict[tuple[str, str], Decision] = field(default_factory=dict)  # (rule pointer, reason) -> refusal
    # Checks that read the session view, after the plain ones: (pointer, check, code, refusals by reason).
    vchecks: tuple[tuple[str, ViewCheck, Code, dict[str, Decision]], ...] = ()
    vapprove_if: tuple[tuple[str, ViewCheck, _Rule], ...] = ()
    result_rules: tuple[ResultRule, ...] = ()  # all_tools' and the matched rules' result blocks
    # Checks that read claims.* / context.* (run with the caller view in place of the arguments), as above.
    cchecks: tuple[tuple[str, Check, Code, dict[str, Decision]], ...] = ()
    capprove_if: tuple[tuple[str, Check, _Rule], ...] = ()


class Policy:
    """A validated, compiled policy.

    Build with :meth:`load` (a ``.json``, ``.yaml`` or ``.yml`` file), :meth:`from_dict`, :meth:`from_json`
    or :meth:`from_yaml`; a policy that does not validate raises :class:`~mcp_guard.PolicyError` listing every
    problem and is never half-loaded. :meth:`evaluate` is the pure decision for one call (steps 1-3 of the
    spec, plus the limits the call would be charged); it does not count anything: use a
    :class:`~mcp_guard.Guard` to enforce limits and ask for approvals.
    """

    name: str | None
    description: str | None
    hash: str
    default: Action

    _DEFAULT_POINTER: ClassVar[str] = "/default"

    def __init__(
        self, document: PolicyDocument | Mapping[str, Any], source_doc: Any = None, *, source: str | None = None
    ) -> None:
        """Prefer :meth:`load` and the ``from_*`` constructors. ``Policy(mapping)`` is ``Policy.from_dict(mapping)``."""
        if not isinstance(document, PolicyDocument):
            source_doc = document
            document = validate_document(document, source)
        elif source_doc is None:
            source_doc = document.model_dump(mode="json", by_alias=False, exclude_unset=True, exclude={"schema_ref"})
        if isinstance(source_doc, Mapping) and "$schema" in source_doc:
            # An editor hint, not policy: two files that differ only in it are the same policy (same hash).
            source_doc = {k: v for k, v in source_doc.items() if k != "$schema"}
        try:
            digest_input = canonical_json(source_doc)
        except (TypeError, ValueError) as exc:
            raise policy_error(
                [{"path": "", "message": f"the policy holds a value that is not JSON ({exc})"}], source
            ) from exc
        self.hash = "sha256:" + hashlib.sha256(digest_input.encode("utf-8")).hexdigest()
        self.document = document
        # A private copy of the document as given, so later changes to the caller's dict change nothing.
        self._raw: Any = json.loads(digest_input)
        self.name = document.name
        self.description = document.description
        self.default = document.default
        self.source = source
        self._compile(document)

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Policy:
        """A policy from a parsed document (a mapping as ``json.load`` would give)."""
        return cls(validate_document(data, source), data, source=source)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str | None = None, max_bytes: int = MAX_POLICY_BYTES) -> Policy:
        """A policy from JSON text; duplicate keys are an error (``json`` would silently keep the last).

        Text over ``max_bytes`` (default 5 MB), nested deeper than 64 levels, or not UTF-8 is refused.
        """
        return cls.from_dict(parse_json(text, source, max_bytes), source=source)

    @classmethod
    def from_yaml(cls, text: str | bytes, *, source: str | None = None, max_bytes: int = MAX_POLICY_BYTES) -> Policy:
        """A policy from YAML text (needs the ``yaml`` extra); duplicate keys, anchors and aliases are errors.

        Text over ``max_bytes`` (default 5 MB), nested deeper than 64 levels, or not UTF-8 is refused.
        """
        return cls.from_dict(parse_yaml(text, source, max_bytes), source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_bytes: int = MAX_POLICY_BYTES) -> Policy:
        """A policy from a file: JSON for ``.json``, YAML for ``.yaml`` / ``.yml``; at most ``max_bytes`` (5 MB)."""
        return cls._from_text(*read_policy_file(path, max_bytes), max_bytes=max_bytes)

    @classmethod
    def _from_text(cls, text: bytes, kind: str, source: str, *, max_bytes: int) -> Policy:
        if kind == "json":
            return cls.from_json(text, source=source, max_bytes=max_bytes)
        return cls.from_yaml(text, source=source, max_bytes=max_bytes)

    def rule_at(self, rule_pointer: str) -> Any:
        """The part of the policy document a rule pointer names: ``rule_at("/tools/git_log")`` is that rule.

        Pointers to checks (``/tools/x/deny_if/args.amount-gt``) resolve to the deepest part that exists
        (here the ``deny_if`` block); ``""`` is the whole document. The result is a copy-safe plain value.
        """
        node = self._raw
        for token in rule_pointer.split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                break
        return node

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of a policy document."""
        return json_schema()

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled closures do not pickle; the document does, and loading it again gives the same policy.
        return (_rebuild, (self._raw, self.source))

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Policy{label} {self.hash[:19]}… default={self.default}>"

    # -- compilation -------------------------------------------------------------------------------------

    def _compile(self, doc: PolicyDocument) -> None:
        self._exact: dict[str, list[_Rule]] = {}  # unqualified exact names
        self._exact_q: dict[tuple[str, str], list[_Rule]] = {}  # (server, name)
        self._exact_q_servers: dict[str, list[str]] = {}  # name -> servers with a qualified exact rule for it
        globs: list[tuple[Pattern, _Rule]] = []  # unqualified globs
        globs_q: dict[str, list[tuple[Pattern, _Rule]]] = {}  # server -> its globs
        for order, (text, rule) in enumerate(doc.tools.items()):
            pat = parse_pattern(text)
            compiled = compile_rule(rule, pointer("tools", text), text, rule.action, rule.reason, order)
            compiled.pattern = pat
            if pat.exact:
                if pat.server is None:
                    self._exact.setdefault(pat.name, []).append(compiled)
                else:
                    self._exact_q.setdefault((pat.server, pat.name), []).append(compiled)
                    self._exact_q_servers.setdefault(pat.name, []).append(pat.server)
            elif pat.server is None:
                globs.append((pat, compiled))
            else:
                globs_q.setdefault(pat.server, []).append((pat, compiled))
        self._globs = GlobIndex(globs)
        self._globs_q = {server: GlobIndex(entries) for server, entries in globs_q.items()}
        self._hide = tuple((i, parse_pattern(text)) for i, text in enumerate(doc.hide))
        self._hide_exact: dict[str, int] = {}
        for i, pat in self._hide:
            if pat.exact and pat.server is None:
                self._hide_exact.setdefault(pat.name, i)
        self._classes = {
            cls_name: compile_rule(rule, pointer("classes", cls_name), f"classes.{cls_name}", rule.action, rule.reason)
            for cls_name, rule in doc.classes.items()
        }
        self._all = (
            compile_rule(doc.all_tools, "/all_tools", "all_tools", "allow", None) if doc.all_tools is not None else None
        )
        self._default_rule = _Rule(pointer=self._DEFAULT_POINTER, action=doc.default)
        self.default_results: Trust | None = doc.default_results
        every = [r for rs in self._exact.values() for r in rs] + [r for rs in self._exact_q.values() for r in rs]
        every += [r for _, r in globs] + [r for entries in globs_q.values() for _, r in entries]
        every += list(self._classes.values()) + ([self._all] if self._all is not None else [])
        reads: set[str] = set()
        for r in every:
            reads.update(r.needs)
        #: Parts of session memory some check reads (``texts``, ``calls``, ``secrets``): the guard reads the store
        #: for a call only when this is not empty, and records only these parts.
        self.session_reads: frozenset[str] = frozenset(reads)
        #: Some rule has a ``result`` block.
        self.has_result_rules: bool = any(r.result_rules for r in every)
        #: Nothing about the session or results: the guard's per-call paths stay exactly as without session memory.
        self.session_free: bool = not (self.session_reads or self.has_result_rules)
        self._cache: dict[tuple[str | None, str, str | None], _Plan] = {}
        self._callers_cached = 0
        self._warned: set[str] = set()  # server-qualified patterns already warned about (server unknown)

    def _hidden_at(self, tool: str, server: str | None) -> int | None:
        best: int | None = self._hide_exact.get(tool)
        for i, pat in self._hide:
            if best is not None and i >= best:
                break
            if pat.matches(tool, server):  # a qualified pattern matches a call whose server is unknown
                if server is None and pat.server is not None:
                    self._warn_unknown_server(pat.text, tool)
                return i
        return best

    def _warn_unknown_server(self, pattern: str, tool: str) -> None:
        # Once per pattern and policy: resolutions are memoised, so this runs at most once per tool name anyway.
        if pattern in self._warned:
            return
        self._warned.add(pattern)
        log.warning(
            "a call of %r came without a server name, so the server-qualified pattern %r applies to it as if the "
            "server matched (the strict reading); pass server= (adapters do where the framework knows it)",
            tool,
            pattern,
        )

    def _matching(self, tool: str, server: str | None) -> list[_Rule]:
        """The most specific matching tool rules (several when tied)."""
        if server is None and (self._exact_q or self._globs_q):
            return self._matching_unknown_server(tool)
        if server is not None:
            found = self._exact_q.get((server, tool))
            if found:
                return found
            index = self._globs_q.get(server)
            if index is not None:
                best = self._best_globs(index, tool)
                if best:
                    return best
        found = self._exact.get(tool)
        if found:
            return found
        return self._best_globs(self._globs, tool)

    def _matching_unknown_server(self, tool: str) -> list[_Rule]:
        """Rules for a call whose server is unknown: what would apply on any server, all of it.

        Each server-qualified rule whose tool part matches takes part (for each server, the rule that would
        apply there), beside the unqualified match; the strictest action among them decides and every one's
        checks and limits apply. Skipping them would let ``exchange/withdraw: deny`` pass in silence.
        """
        found: list[_Rule] = list(self._exact.get(tool) or self._best_globs(self._globs, tool))
        servers = set(self._exact_q_servers.get(tool, ()))
        for srv in servers:
            found.extend(self._exact_q[(srv, tool)])
        for srv, index in self._globs_q.items():
            if srv not in servers:
                found.extend(self._best_globs(index, tool))
        for r in found:
            if r.pattern is not None and r.pattern.server is not None:
                self._warn_unknown_server(r.pattern.text, tool)
        return found

    @staticmethod
    def _best_globs(index: GlobIndex[_Rule], tool: str) -> list[_Rule]:
        best: list[_Rule] = []
        top = -1
        for pat, r in index.matching(tool):
            lit = pat.specificity[2]
            if lit > top:
                top, best = lit, [r]
            elif lit == top:
                best.append(r)
        return best

    def _resolve(self, tool: str, server: str | None, rc: str | None) -> _Plan:
        if not isinstance(tool, str) or not (server is None or isinstance(server, str)):
            raise TypeError(f"tool and server must be strings, got {type(tool).__name__} and {type(server).__name__}")
        hidden = self._hidden_at(tool, server)
        matched = self._matching(tool, server)
        fallback = self._classes[rc] if rc is not None and rc in self._classes else self._default_rule
        if matched:
            matched = sorted(matched, key=lambda r: (-_STRICTNESS[r.action], r.order))
            if server is None and all(r.pattern is not None and r.pattern.server is not None for r in matched):
                # Only server-qualified rules matched a call whose server is unknown: on any other server the
                # class or default would apply, so it takes part too (strictest wins; stable sort keeps the
                # tool rule first among equals).
                matched = sorted([*matched, fallback], key=lambda r: -_STRICTNESS[r.action])
        else:
            matched = [fallback]
        rules = tuple(([self._all] if self._all is not None else []) + matched)
        # Every rule that applies to the call redacts on every path (spec section 10): a hidden tool, a plain or
        # default deny too, else their events would describe a password by type and length.
        redact: list[str] = []
        for r in rules:
            redact.extend(p for p in r.redact if p not in redact)
        common: dict[str, Any] = {
            "tool": tool,
            "server": server,
            "policy": self.hash,
            "risk_class": rc,
            "redact": tuple(redact),
        }
        if hidden is not None:
            d = Decision.deny(
                code="hidden",
                rule=f"/hide/{hidden}",
                reason=f"{tool} is not available (hidden by the policy)",
                **common,
            )
            return _Plan(tool, server, "hidden", d, constant=True)
        main = matched[0]
        if main.action == "deny":
            if main is self._default_rule:
                d = Decision.deny(
                    code="default_deny",
                    rule=main.pointer,
                    reason=f"no rule allows {tool} (default: deny)",
                    **common,
                )
            else:
                d = Decision.deny(
                    code="denied",
                    rule=main.pointer,
                    reason=main.reason or f"{tool} is denied by the policy",
                    **common,
                )
            # constant: a plain deny returns from the same first test as a plain allow, so it costs no more.
            return _Plan(tool, server, "deny", d, constant=True)
        limits = tuple(spec for r in rules for spec in r.limits)
        base: dict[str, Any] = dict(common, rule=main.pointer)
        if main.retry is not None:
            base["retry"] = main.retry
        if main.action == "require_approval":
            base.update(
                reason=main.reason or f"{tool} requires a human's approval under the policy",
                approval_timeout_s=main.approval_timeout_s,
                approval_description=main.approval_description,
            )
        per_args = any(s.cost_get is not None for s in limits)
        decision = Decision(
            main.action,
            limits=() if per_args else tuple(s.charge(tool, server, None, None) for s in limits),
            **base,
        )
        plan = _Plan(
            tool,
            server,
            "run",
            decision,
            deciding_rule=main,
            rules=rules,
            schemas=tuple((r.schema[0], r.schema[1], r) for r in rules if r.schema is not None),
            checks=tuple((p, c, "requirement_failed", {}) for r in rules for p, c in r.require)
            + tuple((p, c, "denied", {}) for r in rules for p, c in r.deny_if),
            approve_if=tuple((p, c, r) for r in rules for p, c in r.approve_if),
            limits=limits,
            per_caller=any(s.per_caller for s in limits),
            per_args=per_args,
            vchecks=tuple(
                (p, c, typing.cast(Code, code or "requirement_failed"), {}) for r in rules for p, c, code in r.vrequire
            )
            + tuple((p, c, typing.cast(Code, code or "denied"), {}) for r in rules for p, c, code in r.vdeny_if),
            vapprove_if=tuple((p, c, r) for r in rules for p, c, _ in r.vapprove_if),
            result_rules=tuple(rr for r in rules for rr in r.result_rules),
            cchecks=tuple((p, c, "requirement_failed", {}) for r in rules for k, p, c in r.caller if k == "require")
            + tuple((p, c, "denied", {}) for r in rules for k, p, c in r.caller if k == "deny_if"),
            capprove_if=tuple((p, c, r) for r in rules for k, p, c in r.caller if k == "approve_if"),
        )
        plan.reads_args = bool(plan.schemas) or per_args or any(r.reads_args for r in rules)
        # A plan whose checks read the session or the caller takes the full path (never the memoised fast ones).
        plan.checks_only = not (
            plan.schemas
            or plan.approve_if
            or plan.per_args
            or plan.vchecks
            or plan.vapprove_if
            or plan.cchecks
            or plan.capprove_if
        )
        plan.constant = plan.checks_only and not (plan.checks or plan.per_caller)
        return plan

    def _plan(self, tool: str, server: str | None, rc: str | None) -> _Plan:
        key = (server, tool, rc)
        plan = self._cache.get(key)
        if plan is None:
            plan = self._resolve(tool, server, rc)
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = plan
        return plan

    # -- evaluation ----------------------------------------------------------------------------------------

    def evaluate(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        session_view: SessionView | None = None,
        context: Any = None,
        claims: Mapping[str, Any] | None = None,
    ) -> Decision:
        """The decision for one call: steps 1-3 of the spec, and the limits the call would be charged.

        Pure: no I/O, no clock, no callbacks; the same inputs always give the same decision. It does not
        check or count the limits (the :class:`~mcp_guard.Guard` does that with a store). ``session_view`` is
        what the session has seen and done (:class:`~mcp_guard.SessionView`), for provenance (``from``),
        ``session.*`` paths and ``no_secrets``; without one the session has seen nothing. ``context`` (the
        framework's context object) and ``claims`` (a verified token's claims) are what ``context.*`` and
        ``claims.*`` conditions read; they are read as data, never called.
        """
        rc = risk_class(annotations) if annotations else None
        plan = self._cache.get((server, tool, rc))
        if plan is None:
            plan = self._plan(tool, server, rc)
        if plan.constant and (args is None or type(args) is dict):
            return plan.decision  # a plain allow, a plain deny, a hidden tool
        if plan.checks_only and type(args) is dict:
            # The common shapes (require / deny_if, per-caller limits): run the checks inline, then the
            # precomputed decision, or the one memoised for this caller.
            if plan.reads_args:
                for value in args.values():  # the common flat leaves, without a call; anything else is walked
                    if type(value) not in _FLAT_LEAVES:
                        bad = non_finite_path(args)
                        if bad is not None:
                            return self._refuse_non_finite(plan, bad)
                        break
            for ptr, check, code, refusals in plan.checks:
                why = check(args, identity, session, server, tool)
                if why is not None:
                    refusal = refusals.get(why)  # a firing check: one lookup, no Decision built
                    return refusal if refusal is not None else self._check_refusal(plan, ptr, code, refusals, why)
            if not plan.per_caller:
                return plan.decision
            mine = plan.by_caller.get((identity, session))
            if mine is not None:
                return mine
        if plan.kind != "run":
            return plan.decision  # hidden or denied, called with arguments that are not a dict
        return self._run(
            plan, args, identity, session, EMPTY_VIEW if session_view is None else session_view, context, claims
        )

    def _redact_for(
        self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> tuple[str, ...]:
        """The ``redact`` paths of every rule that applies to a call of ``tool`` (``all_tools``, the matched
        rules, the class or default), whatever the call's arguments: for a refusal decided before the policy
        reads them (arguments that do not fit the tool's schema, NaN), whose event must hide them all the same."""
        rc = risk_class(annotations) if annotations else None
        return self._plan(tool, server, rc).decision.redact

    def _check_refusal(
        self, plan: _Plan, rule: str, code: Code, refusals: dict[str, Decision], reason: str
    ) -> Decision:
        """The refusal for a failing (require) or firing (deny_if) check, remembered in its own ``refusals``.

        The rule that owns the check refuses the call, so its own ``reason`` (the text the model sees when this
        rule denies) leads, and the check follows in brackets: the author's words say what the rule is for, the
        check says which of its conditions this call broke. Built once per (check, reason); never on the hot path.
        A check that reads the caller (``claims.*``, ``context.*``, ``identity``) who did not say refuses with
        ``identity_required`` instead.
        """
        if isinstance(reason, CallerMissing):  # the check reads the caller, who did not say (spec section 11)
            code, reason = "identity_required", str(reason)
        else:
            owner = next((r for r in plan.rules if rule.startswith(r.pointer + "/")), None)
            if owner is not None and owner.reason:
                reason = f"{owner.reason} ({reason})"
        refusal = self._refusal(plan, code, rule, reason)
        if len(refusals) < _REFUSALS_MAX:
            refusals[reason] = refusal
        return refusal

    def _refusal(self, plan: _Plan, code: Code, rule: str, reason: str) -> Decision:
        # ``reason`` names what refused: the check (after the owning rule's own text, see _check_refusal), the
        # schema path, the cost. Reasons carry no argument values, so each (check, reason) refusal is built once
        # and reused.
        key = (rule, reason)
        decision = plan.refusals.get(key)
        if decision is None:
            base = plan.decision
            decision = Decision.deny(
                plan.tool,
                code,
                server=plan.server,
                rule=rule,
                reason=reason,
                policy=self.hash,
                risk_class=base.risk_class,
                redact=base.redact,
            )
            if len(plan.refusals) < _REFUSALS_MAX:
                plan.refusals[key] = decision
        return decision

    def _refuse_non_finite(self, plan: _Plan, path: str) -> Decision:
        return self._refusal(
            plan,
            "invalid_arguments",
            plan.deciding_rule.pointer if plan.deciding_rule else self._DEFAULT_POINTER,
            f"{path} is not a finite number (NaN and Infinity are not valid JSON)",
        )

    def _run(
        self,
        plan: _Plan,
        args: object,
        identity: str | None,
        session: str | None,
        view: SessionView = EMPTY_VIEW,
        context: Any = None,
        claims: Mapping[str, Any] | None = None,
    ) -> Decision:
        tool, server = plan.tool, plan.server
        if args is None:
            args = {}
        elif type(args) is not dict and not isinstance(args, Mapping):
            return self._refusal(
                plan,
                "invalid_arguments",
                plan.deciding_rule.pointer if plan.deciding_rule else self._DEFAULT_POINTER,
                f"the arguments must be a JSON object (a mapping of name to value), got {type(args).__name__}",
            )
        if plan.reads_args:
            bad = _non_finite_arg_path(args)
            if bad is not None:
                return self._refuse_non_finite(plan, bad)
        for ptr, validate, _owner in plan.schemas:
            try:
                validate(args)
            except Exception as exc:  # fastjsonschema's JsonSchemaValueException, or a value it cannot handle
                return self._refusal(plan, "invalid_arguments", ptr, _schema_reason(exc))
        for ptr, check, code, refusals in plan.checks:
            why = check(args, identity, session, server, tool)
            if why is not None:
                return refusals.get(why) or self._check_refusal(plan, ptr, code, refusals, why)
        for ptr, vcheck, code, refusals in plan.vchecks:
            why = vcheck(args, identity, session, server, tool, view)
            if why is not None:
                return refusals.get(why) or self._check_refusal(plan, ptr, code, refusals, why)
        caller = caller_view(context, claims) if plan.cchecks or plan.capprove_if else _NO_CALLER
        for ptr, check, code, refusals in plan.cchecks:
            why = check(caller, identity, session, server, tool)
            if why is not None:
                return refusals.get(why) or self._check_refusal(plan, ptr, code, refusals, why)
        decision = plan.decision
        main = plan.deciding_rule or self._default_rule
        if plan.per_args:
            charges: list[LimitCharge] = []
            for spec in plan.limits:
                cost = spec.cost_of(args)
                if isinstance(cost, str):
                    return self._refusal(plan, "invalid_arguments", f"{spec.rule}/cost", cost)
                charges.append(spec.charge(tool, server, identity, session, cost))
            decision = decision.replace(limits=tuple(charges))
        elif plan.per_caller:
            key = (identity, session)
            cached = plan.by_caller.get(key)
            if cached is None:
                cached = decision.replace(
                    limits=tuple(spec.charge(tool, server, identity, session) for spec in plan.limits)
                )
                if len(plan.by_caller) < _CALLER_CACHE_MAX and self._callers_cached < _CALLERS_CACHED_MAX:
                    plan.by_caller[key] = cached
                    self._callers_cached += 1
            decision = cached
        if decision.action == "allow":
            for ptr, check, owner in plan.approve_if:
                why = check(args, identity, session, server, tool)
                if why is not None:
                    return self._held(plan, decision, ptr, why, owner, main)
            for ptr, vcheck, owner in plan.vapprove_if:
                why = vcheck(args, identity, session, server, tool, view)
                if why is not None:
                    return self._held(plan, decision, ptr, why, owner, main)
            for ptr, check, owner in plan.capprove_if:
                why = check(caller, identity, session, server, tool)
                if why is not None:
                    return self._held(plan, decision, ptr, why, owner, main)
        return decision

    def _held(self, plan: _Plan, decision: Decision, rule: str, reason: str, owner: _Rule, main: _Rule) -> Decision:
        """An ``approve_if`` that fired: the call is held for a human, unless the caller is unknown."""
        if isinstance(reason, CallerMissing):  # no human is asked on behalf of a caller who did not say who
            return self._refusal(plan, "identity_required", rule, str(reason))
        return decision.replace(
            action="require_approval",
            rule=rule,
            reason=reason,
            approval_timeout_s=owner.approval_timeout_s or main.approval_timeout_s,
            approval_description=owner.approval_description or main.approval_description,
        )

    def exposes(self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None) -> bool:
        """Whether the model should be shown ``tool``: False when it is hidden or denied outright.

        A tool whose calls may still be refused by conditions, schemas or limits is exposed.
        """
        rc = risk_class(annotations) if annotations else None
        return self._plan(tool, server, rc).kind == "run"

    def may_require_approval(
        self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether some call of ``tool`` can be held for a human: its rule requires approval or has ``approve_if``.

        Adapters use it to wire a framework's approval pause only where it can be needed. A tool that is
        hidden or denied outright never needs approval (it is refused first).
        """
        rc = risk_class(annotations) if annotations else None
        plan = self._plan(tool, server, rc)
        return plan.kind == "run" and (
            plan.decision.action == "require_approval"
            or bool(plan.approve_if)
            or bool(plan.vapprove_if)
            or bool(plan.capprove_if)
        )

    # -- the session (spec section 11) ----------------------------------------------------------------------

    def trust_of(self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None) -> Trust:
        """The trust label of what ``tool`` returns: its rule's ``results``, else ``default_results``, else
        ``untrusted`` for a tool annotated ``openWorldHint: true`` or in class ``open_world``, ``trusted`` otherwise."""
        return self.result_trust(tool, server=server, annotations=annotations)[0]

    def result_trust(
        self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> tuple[Trust, tuple[FieldLabel, ...]]:
        """(the trust label of ``tool``'s whole result, the labels its rule gives parts of a structured result).

        The first rule (the deciding one, then the others that apply) that writes ``results`` decides both; a
        map without a ``result`` key leaves the whole result's label to ``default_results`` and the annotations.
        """
        rc = risk_class(annotations) if annotations else None
        plan = self._plan(tool, server, rc)
        for rule in (plan.deciding_rule, *plan.rules):
            if rule is not None and (rule.results is not None or rule.result_fields):
                if rule.results is not None:
                    return rule.results, rule.result_fields
                return self._default_trust(rc, annotations), rule.result_fields
        return self._default_trust(rc, annotations), ()

    def _default_trust(self, rc: str | None, annotations: Mapping[str, Any] | None) -> Trust:
        if self.default_results is not None:
            return self.default_results
        if rc == "open_world" or (isinstance(annotations, Mapping) and annotations.get("openWorldHint") is True):
            return "untrusted"
        return "trusted"

    def result_rules(
        self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> tuple[ResultRule, ...]:
        """The result rules that judge what ``tool`` returns (``all_tools``' and its rule's ``result`` blocks)."""
        rc = risk_class(annotations) if annotations else None
        return self._plan(tool, server, rc).result_rules


def _non_finite_arg_path(args: Mapping[str, Any]) -> str | None:
    """The path of a NaN / Infinity in ``args``, walking only when a value is not a flat leaf.

    (``evaluate``'s hot path inlines the same loop to save the call.)
    """
    for value in args.values():
        if type(value) not in _FLAT_LEAVES:
            return non_finite_path(args)
    return None


def read_policy_file(path: str | os.PathLike[str], max_bytes: int = MAX_POLICY_BYTES) -> tuple[bytes, str, str]:
    """(the bytes, ``"json"`` or ``"yaml"``, the source name) of a policy file, bounded by ``max_bytes``."""
    p = Path(path)
    source = str(p)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise input_error(f"unknown policy file type {suffix or '(none)'!r}; use .json, .yaml or .yml", source)
    try:
        check_size(p.stat().st_size, max_bytes, source)  # before reading: a huge file is never read at all
        with p.open("rb") as fh:
            text = fh.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise input_error(f"cannot read the file: {exc.strerror or exc}", source) from exc
    check_size(len(text), max_bytes, source)
    return text, "json" if suffix == ".json" else "yaml", source


def _rebuild(raw: Any, source: str | None) -> Policy:
    return Policy.from_dict(raw, source=source)


def _schema_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        return f"the arguments could not be checked against the schema: {exc}"
    name = getattr(exc, "name", None)
    if isinstance(name, str) and name.startswith("data"):
        path = "args" + name[4:]
        if message.startswith(name):
            message = path + message[len(name) :]
    return f"invalid arguments: {message}"


def load_policy(source: object) -> Policy:
    """A :class:`Policy` from a Policy (as is), a mapping, a path (``str`` / ``PathLike``) or a Guard."""
    if isinstance(source, Policy):
        return source
    if isinstance(source, Mapping):
        return Policy.from_dict(source)
    if isinstance(source, (str, os.PathLike)):
        return Policy.load(source)
    inner = getattr(source, "policy", None)
    if isinstance(inner, Policy):
        return inner
    raise TypeError(
        "expected a policy: a Policy, a Guard, a mapping (the parsed document), or a path to a .json / .yaml "
        f"file; got {type(source).__name__}"
    )


__all__ = ["Policy", "PolicyError", "compile_rule", "load_policy", "risk_class"]
