"""The policy document (spec section 3) as pydantic v2 models, and the translation of every validation
problem into one :class:`~mcp_guard.PolicyError` that names the field path, what was wrong and what is
allowed.

The models validate; they do not compile. :mod:`mcp_guard._policy.policy` compiles a validated model into the
structures the evaluator runs on. Reading files (JSON with duplicate-key detection, YAML through the
``yaml`` extra) lives here too, so every way into a policy meets the same checks.

Policy files are bounded (spec section 8), because a policy may come from a pull request or a config
service: text over :data:`MAX_POLICY_BYTES` is refused before it is parsed; nesting deeper than
:data:`MAX_DEPTH` is refused before a recursive parser sees it (no ``RecursionError``); YAML anchors and
aliases are refused from the event stream, before any object is built (a 484-byte "billion laughs" would
otherwise expand to gigabytes); bytes that are not UTF-8 are a load error with the offset.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeGuard, TypeVar, Union, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, core_schema

from mcp_guard._errors import PolicyError, require_extra
from mcp_guard._policy.conditions import OPERATORS, describe_type, validate_conditions
from mcp_guard._policy.decision import Action, Scope
from mcp_guard._policy.matching import check_pattern, pointer
from mcp_guard._policy.suggest import did_you_mean

WindowName = Literal["second", "minute", "hour", "day"]
Mode = Literal["enforce", "shadow"]
RiskClass = Literal["read", "write", "destructive", "open_world"]
#: A condition block: path (``args.amount``, ``identity``...) -> operator -> the value the policy wrote.
Conditions = Mapping[str, Mapping[str, object]]
#: A rule's ``args_schema``: a JSON Schema (draft 7), an object or a boolean.
ArgsSchema = Mapping[str, object] | bool

ACTIONS: tuple[Action, ...] = get_args(Action)
SCOPES: tuple[Scope, ...] = get_args(Scope)
RISK_CLASSES: tuple[RiskClass, ...] = get_args(RiskClass)
MODES: tuple[Mode, ...] = get_args(Mode)
#: Where a problem is in the document: keys and list indexes, as pydantic reports them.
Location = tuple[int | str, ...]
_Choice = TypeVar("_Choice", bound=str)
_Plain = TypeVar("_Plain")
WINDOWS: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_WINDOW_HELP = "allowed: second, minute, hour, day, or a number of seconds > 0"
_RATE_RE = re.compile(r"^(\d+)/(second|minute|hour|day|\d+(?:\.\d+)?s?)$")

#: Largest policy text accepted (bytes); ``Policy.load(path, max_bytes=...)`` and the ``from_*`` constructors
#: take another bound.
MAX_POLICY_BYTES = 5 * 1024 * 1024
#: Deepest nesting of objects and lists accepted in a policy document (a real policy needs about 8).
MAX_DEPTH = 64


class PolicyInputError(PolicyError):
    """The policy text could not be read as a document at all (too large, too deep, not UTF-8, unreadable).

    A :class:`PolicyError` like any other for library callers; the CLI reports it as bad input (exit 2)
    rather than an invalid policy (exit 1).
    """


class _Problems(ValueError):
    """Several problems inside one field (conditions, a JSON Schema), each at its own relative path."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


def _is_number(value: object) -> TypeGuard[int | float]:
    # A finite int or float, not a bool; ints too large for a float (10**400) are refused, not an OverflowError.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# -- field validators ----------------------------------------------------------------------------------
# Each is the whole validation of its field (see _Checked): JSON types exactly, and messages that say what is
# allowed. They take ``object`` because a policy document may hold anything.


def _v_version(v: object) -> Literal["1"]:
    if v == "1" or (type(v) is int and v == 1):
        return "1"
    raise ValueError(f'unsupported version {v!r}; allowed: "1" (the integer 1 is accepted too)')


def _one_of(what: str, choices: tuple[_Choice, ...]) -> Callable[[object], _Choice]:
    def check(v: object) -> _Choice:
        if isinstance(v, str) and v in choices:
            return v
        shown = repr(v) if isinstance(v, str) else describe_type(v)
        raise ValueError(f"{shown} is not {what}; allowed: {', '.join(choices)}")

    return check


def _of_type(kind: type[_Plain], what: str) -> Callable[[object], _Plain]:
    """A check that the value is a ``kind`` (a bool is a bool, a str a str: strict JSON types)."""

    def check(v: object) -> _Plain:
        if isinstance(v, kind):
            return v
        raise ValueError(f"expected {what}, got {describe_type(v)}")

    return check


def _v_window(v: object) -> float | WindowName:
    if isinstance(v, str):
        if v in WINDOWS:
            return typing.cast(WindowName, v)
        raise ValueError(f"{v!r} is not a window; {_WINDOW_HELP}")
    if _is_number(v) and v > 0:
        return v
    shown = repr(v) if _is_number(v) else describe_type(v)
    raise ValueError(f"{shown} is not a window; {_WINDOW_HELP}")


def _v_max(v: object) -> int:
    if type(v) is int and v >= 0:
        return v
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a valid max (a boolean); allowed: an integer >= 0")
    if isinstance(v, int):
        raise ValueError(f"{v} is not a valid max (negative); allowed: an integer >= 0")
    shown = repr(v) if isinstance(v, float) else describe_type(v)
    raise ValueError(f"{shown} is not a valid max (not an integer); allowed: an integer >= 0")


def _v_cost(v: object) -> int | str:
    if type(v) is int and v >= 0:
        return v
    if isinstance(v, str):
        if v.startswith("args.") and all(v[5:].split(".")):
            return v
        raise ValueError(f"{v!r} is not a cost path; allowed: an integer >= 0 or an argument path like 'args.amount'")
    shown = repr(v) if _is_number(v) else describe_type(v)
    raise ValueError(f"{shown} is not a valid cost; allowed: an integer >= 0 or an argument path like 'args.amount'")


def _v_counter(v: object) -> str:
    if isinstance(v, str) and v:
        return v
    raise ValueError(f"a counter must be a non-empty string, got {describe_type(v) if v != '' else 'an empty string'}")


_v_bool = _of_type(bool, "true or false")
_v_text = _of_type(str, "a string")


def _v_optional_bool(v: object) -> bool | None:
    return None if v is None else _v_bool(v)


def _v_rate_limit(v: object) -> str:
    if isinstance(v, str):
        m = _RATE_RE.match(v)
        if m and (m.group(2) in WINDOWS or float(m.group(2).rstrip("s")) > 0):
            return v
    shown = repr(v) if isinstance(v, str) else describe_type(v)
    raise ValueError(
        f"{shown} is not a rate limit; write '<max>/<window>' with window second, minute, hour, day or a "
        "number of seconds > 0, e.g. '30/minute', '30/60s' or '30/60'"
    )


def _v_conditions(v: object) -> Conditions:
    problems = validate_conditions(v)
    if problems:
        raise _Problems(problems)
    return typing.cast(Conditions, v)  # validate_conditions checked the shape: path -> {operator: value}


def _v_result_conditions(v: object) -> Conditions:
    problems = validate_conditions(v, "result")
    if problems:
        raise _Problems(problems)
    return typing.cast(Conditions, v)


def _v_timeout(v: object) -> float:
    if _is_number(v) and v > 0:
        return v
    shown = repr(v) if _is_number(v) else describe_type(v)
    raise ValueError(f"{shown} is not a timeout; allowed: a number of seconds > 0")


def _v_pattern(v: object) -> str:
    why = check_pattern(v)  # type: ignore[arg-type]  # it takes anything and says why a non-string is wrong
    if why:
        raise ValueError(why)
    return typing.cast(str, v)


def _v_class(v: object) -> RiskClass:
    if isinstance(v, str) and v in RISK_CLASSES:
        return v
    raise ValueError(f"{v!r} is not a risk class; allowed: {', '.join(RISK_CLASSES)}")


def _v_redact_path(v: object) -> str:
    if isinstance(v, str) and v and all(v.split(".")):
        return v
    raise ValueError(f"{v!r} is not an argument path; allowed: 'args.name' or 'name', dotted for nested values")


def _remote_refs(schema: object, where: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    # A remote $ref would make the validator fetch a URL; the evaluator must do no I/O.
    found: list[tuple[tuple[str, ...], str]] = []
    if isinstance(schema, Mapping):
        for k, v in schema.items():
            if k == "$ref" and isinstance(v, str) and not v.startswith("#"):
                found.append(((*where, "$ref"), f"only local references ('#/...') are allowed, got {v!r}"))
            else:
                found.extend(_remote_refs(v, (*where, str(k))))
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            found.extend(_remote_refs(v, (*where, str(i))))
    return found


def _v_schema(v: object) -> ArgsSchema:
    if not isinstance(v, (Mapping, bool)):
        raise ValueError(f"args_schema must be a JSON Schema (an object or a boolean), got {describe_type(v)}")
    try:
        text = canonical_json(v)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"args_schema must be JSON: {exc}") from None
    problems = _schema_problems(text)
    if problems:
        raise _Problems(list(problems))
    return v


# Keywords of JSON Schema 2019-09 / 2020-12 that fastjsonschema (drafts 4, 6, 7) does not enforce. A schema using
# them would validate at load and then silently not check the arguments: refuse it at load instead.
_UNENFORCED = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
    }
)
_ENFORCED_DRAFTS = ("draft-04", "draft-06", "draft-07")


_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "definitions", "$defs", "dependencies"})


def _unenforced(schema: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            found.extend(_unenforced(item, (*path, str(i))))
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key in _UNENFORCED:
                found.append(
                    ((*path, key), f"{key!r} is not supported: args_schema is enforced as JSON Schema draft 7")
                )
            elif key in _NAMED_SCHEMAS and isinstance(value, dict):
                # Keys here are property or definition names, not keywords: look only inside their schemas.
                for name, sub in value.items():
                    found.extend(_unenforced(sub, (*path, key, name)))
            elif key not in ("const", "enum", "default", "examples"):  # values there are data, not schemas
                found.extend(_unenforced(value, (*path, key)))
    return found


@lru_cache(maxsize=4096)
def _schema_problems(schema_json: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    # Checked once per distinct schema: a policy with 10,000 copies of one schema pays for one check.
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    schema = json.loads(schema_json)
    declared = schema.get("$schema") if isinstance(schema, dict) else None
    if isinstance(declared, str) and not any(draft in declared for draft in _ENFORCED_DRAFTS):
        return ((("$schema",), f"{declared!r} is not supported; allowed: JSON Schema draft 4, 6 or 7"),)
    try:
        # The same draft fastjsonschema enforces (7 unless $schema says 4 or 6), so what loads is what is checked.
        Draft7Validator.check_schema(schema)
    except SchemaError as exc:
        return (((*(str(p) for p in exc.path),), f"invalid JSON Schema: {exc.message}"),)
    problems = _unenforced(schema) + list(_remote_refs(schema))
    if problems:
        return tuple(problems)
    try:
        compile_schema(schema_json)
    except Exception as exc:  # fastjsonschema raises its own errors for schemas it cannot compile
        return (((), f"the JSON Schema cannot be compiled: {exc}"),)
    return ()


@lru_cache(maxsize=4096)
def compile_schema(schema_json: str) -> Callable[[object], object]:
    """A fastjsonschema validator for a schema given as canonical JSON; identical schemas compile once."""
    import fastjsonschema

    # use_default=False: validating must never write defaults into the caller's arguments.
    validate: Callable[[object], object] = fastjsonschema.compile(json.loads(schema_json), use_default=False)
    return validate


def canonical_json(doc: object) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A field's whole validation (``check``) and its JSON Schema, for ``Annotated[<type>, _Checked(...)]``.

    pydantic would otherwise validate the declared type as well, after ``check``: coercing (an int window to a
    float, which changes the document's dump and hash) or, for a union, warning when it serialises. ``check``
    alone decides, as the static type says, and the value is serialised as it is.
    """

    check: Callable[[object], object]
    schema: dict[str, Any] | None = None  # None: the plain JSON Schema of a string

    def __get_pydantic_core_schema__(self, source: object, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return dict(self.schema) if self.schema is not None else {"type": "string"}


VersionT = Annotated[Literal["1"], _Checked(_v_version, {"anyOf": [{"const": "1"}, {"const": 1}]})]
ActionT = Annotated[Action, _Checked(_one_of("an action", ACTIONS), {"enum": list(ACTIONS)})]
ScopeT = Annotated[Scope, _Checked(_one_of("a scope", SCOPES), {"enum": list(SCOPES)})]
WindowT = Annotated[
    float | WindowName,
    _Checked(_v_window, {"anyOf": [{"enum": list(WINDOWS)}, {"type": "number", "exclusiveMinimum": 0}]}),
]
MaxT = Annotated[int, _Checked(_v_max, {"type": "integer", "minimum": 0})]
CostT = Annotated[
    int | str,
    _Checked(_v_cost, {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^args\..+"}]}),
]
_MODE = _Checked(_one_of("a mode", MODES), {"enum": list(MODES)})
ModeT = Annotated[Mode, _MODE]
OptModeT = Annotated[Mode | None, _MODE]  # a rule's mode: unset follows the policy's
CounterT = Annotated[str | None, _Checked(_v_counter, {"type": "string", "minLength": 1})]
BoolT = Annotated[bool, _Checked(_v_bool, {"type": "boolean"})]
OptBoolT = Annotated[bool | None, _Checked(_v_optional_bool, {"type": "boolean"})]
RateT = Annotated[str | None, _Checked(_v_rate_limit, {"type": "string", "pattern": _RATE_RE.pattern})]
TextT = Annotated[str | None, _Checked(_v_text, {"type": "string"})]
PIN_ACTIONS = ("deny", "hide", "require_approval")
PinActionT = Annotated[
    Literal["deny", "hide", "require_approval"],
    _Checked(_one_of("a pin action", PIN_ACTIONS), {"enum": list(PIN_ACTIONS)}),
]
FileT = Annotated[str, _Checked(_v_text, {"type": "string", "minLength": 1})]
TimeoutT = Annotated[float | None, _Checked(_v_timeout, {"type": "number", "exclusiveMinimum": 0})]
PatternT = Annotated[str, _Checked(_v_pattern)]
ClassT = Annotated[RiskClass, _Checked(_v_class)]
RedactT = Annotated[str, _Checked(_v_redact_path)]
_COND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": r"^(args\..+|identity|session|server|tool|claims\..+|context\..+)$"},
    "additionalProperties": {
        "type": "object",
        "propertyNames": {"enum": list(OPERATORS)},
        "minProperties": 1,
    },
}
ConditionsT = Annotated[Conditions, _Checked(_v_conditions, _COND_SCHEMA)]
_RESULT_COND_SCHEMA: dict[str, Any] = {
    **_COND_SCHEMA,
    "propertyNames": {"pattern": r"^(result\.text|result\.json\..+)$"},
}
ResultConditionsT = Annotated[Conditions, _Checked(_v_result_conditions, _RESULT_COND_SCHEMA)]
Trust = Literal["trusted", "untrusted"]
TRUSTS: tuple[Trust, ...] = get_args(Trust)
_TRUST = _Checked(_one_of("a trust label", TRUSTS), {"enum": list(TRUSTS)})
OptTrustT = Annotated[Trust | None, _TRUST]


def _v_results(v: object) -> Trust | Mapping[str, Trust] | None:
    from mcp_guard._policy.fields import check_results

    if v is None:
        return None
    problems = check_results(v)
    if problems:
        raise _Problems(problems)
    return typing.cast("Trust | Mapping[str, Trust]", v)


_RESULTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": list(TRUSTS)},
        {
            "type": "object",
            "propertyNames": {"pattern": r"^(result|result\.json\..+)$"},
            "additionalProperties": {"enum": list(TRUSTS)},
            "minProperties": 1,
        },
    ]
}
ResultsT = Annotated[Trust | Mapping[str, Trust] | None, _Checked(_v_results, _RESULTS_SCHEMA)]
SchemaT = Annotated[
    ArgsSchema | None,
    _Checked(_v_schema, {"type": ["object", "boolean"], "description": "a JSON Schema for the arguments"}),
]


class _StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class Limit(_StrictModel):
    """One rate limit: ``max`` calls (or cost units) per sliding ``window``, per ``scope``."""

    counter: CounterT = Field(None, description="budget name; limits with the same counter and scope key share it")
    window: WindowT = Field(description="second, minute, hour, day, or a number of seconds > 0 (sliding)")
    max: MaxT = Field(description="calls (or cost units) admitted per window")
    scope: ScopeT = Field("grant", description="grant/identity: per caller; session; global; tool: per tool name")
    cost: CostT = Field(1, description="units per call: an integer, or an argument path such as 'args.amount'")
    count_failures: BoolT = Field(False, description="true: a call that fails still uses its quota")


class Approval(_StrictModel):
    timeout_s: TimeoutT = Field(None, description="seconds to wait for a human before the call is refused")
    description: TextT = Field(None, description="what the human is asked")


class ResultRules(_StrictModel):
    """What a tool returned, judged before the model sees it: each block holds conditions on ``result.text``
    and ``result.json.<path>``; any condition that holds applies its action."""

    redact: ResultConditionsT = Field(
        default_factory=dict, description="conditions; what they match becomes [redacted] for the model and audit"
    )
    withhold: ResultConditionsT = Field(
        default_factory=dict, description="conditions; when one holds the model gets result_withheld instead"
    )
    taint: ResultConditionsT = Field(
        default_factory=dict, description="conditions; when one holds the result counts as untrusted"
    )
    reason: TextT = Field(None, description="what the model is told when a result is withheld")


class _RuleBase(_StrictModel):
    limits: list[Limit] = Field(default_factory=list, description="rate limits charged to each call")
    rate_limit: RateT = Field(None, description="shorthand for one per-caller limit: '30/minute', '30/60s', '30/60'")
    require: ConditionsT = Field(default_factory=dict, description="checks that must all hold, else denied")
    deny_if: ConditionsT = Field(default_factory=dict, description="checks; any that holds denies the call")
    approve_if: ConditionsT = Field(default_factory=dict, description="checks; any that holds asks a human")
    args_schema: SchemaT = None
    approval: Approval | None = Field(None, description="approval settings for this rule")
    redact: list[RedactT] = Field(default_factory=list, description="argument paths never logged in clear")
    description: TextT = Field(None, description="free text for people")
    mode: OptModeT = Field(None, description="enforce, or shadow: audit what this rule would refuse, refuse nothing")
    result: ResultRules | None = Field(None, description="rules on what the tool returns: redact, withhold, taint")

    @model_validator(mode="after")
    def _no_secrets_in_require(self) -> _RuleBase:
        for kind in ("deny_if", "approve_if"):
            for path, ops in getattr(self, kind).items():
                if "no_secrets" in ops:
                    raise ValueError(
                        f"{kind}: {path}: 'no_secrets' belongs in 'require' (it refuses a call whose argument "
                        "holds a secret this session saw)"
                    )
        return self


class Rule(_RuleBase):
    """A tool or class rule. ``{}`` allows, as in PolicyLayer."""

    action: ActionT = Field("allow", description="allow, deny or require_approval")
    reason: TextT = Field(
        default=None,
        validation_alias=AliasChoices("reason", "on_deny"),
        description="what the model sees when this rule denies; when one of its require or deny_if checks did, "
        "the check follows in brackets (alias: on_deny)",
    )
    retry: OptBoolT = Field(
        None,
        description="true: retry transient upstream failures; false: never; unset: only tools annotated "
        "readOnlyHint or idempotentHint",
    )
    results: ResultsT = Field(
        None,
        description="trusted or untrusted: whether what the tool returns may steer later calls (default: "
        "default_results, else untrusted for open-world tools); or a map labelling parts of a structured result: "
        "'result' (the whole) and 'result.json.<path>' ('*' for any key or list element) to trusted or untrusted",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_reason(cls, data: object) -> object:
        if isinstance(data, Mapping) and "reason" in data and "on_deny" in data:
            raise ValueError("give either 'reason' or its alias 'on_deny', not both")
        return data


class AllTools(_RuleBase):
    """Limits and conditions applied to every call, in addition to the rule that matched."""


class Pins(_StrictModel):
    """Tool pinning: tools that differ from the lock file written by ``mcp-guard pin`` are not trusted."""

    file: FileT = Field(description="the lock file written by `mcp-guard pin` (relative to the policy file)")
    on_change: PinActionT = Field(
        "deny",
        description="a pinned tool whose description, schema or annotations changed: deny, hide or "
        "require_approval (code tool_changed)",
    )
    on_new: PinActionT = Field(
        "deny",
        description="a tool the lock file does not name (new, or shadowing another): deny, hide or "
        "require_approval (code tool_changed)",
    )


class PolicyDocument(_StrictModel):
    """An mcp-guard policy, version 1 (PolicyLayer policies load unchanged)."""

    version: VersionT = Field(description='"1"')
    default: ActionT = Field(description="what a call gets when no tool rule or class matches")
    tools: dict[PatternT, Rule] = Field(
        default_factory=dict, description="tool pattern (name, glob, or server/pattern) to rule"
    )
    hide: list[PatternT] = Field(default_factory=list, description="tool patterns never shown, denied if called")
    all_tools: AllTools | None = Field(None, description="limits and conditions applied to every call as well")
    classes: dict[ClassT, Rule] = Field(
        default_factory=dict, description="rules by risk class (from MCP annotations) for unmatched tools"
    )
    name: TextT = Field(None, description="shown in audit and CLI output")
    description: TextT = Field(None, description="free text")
    mode: ModeT = Field("enforce", description="enforce, or shadow: audit what would be refused, refuse nothing")
    pins: Pins | None = Field(None, description="tool pinning: a lock file of the reviewed tools (spec section 11)")
    default_results: OptTrustT = Field(
        None,
        description="trust label of results for rules without 'results' (unset: untrusted for tools annotated "
        "openWorldHint or in class open_world, trusted otherwise)",
    )
    schema_ref: TextT = Field(
        None,
        alias="$schema",
        description="the JSON Schema this file follows (for editors: `mcp-guard schema > policy.schema.json`); "
        "ignored by the guard",
    )


# -- error translation ---------------------------------------------------------------------------------

_MISSING_HELP = {
    "version": 'allowed: "1"',
    "default": f"allowed: {', '.join(ACTIONS)}",
    "window": _WINDOW_HELP,
    "max": "allowed: an integer >= 0",
}


def _fields_of(model: type[BaseModel]) -> list[str]:
    # The rule's own fields (action, reason) first, each alias right after its field.
    first = [n for n in ("action", "reason") if n in model.model_fields]
    names: list[str] = []
    for name in first + [n for n in model.model_fields if n not in first]:
        names.append(model.model_fields[name].alias or name)
        alias = model.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            names.extend(str(c) for c in alias.choices if c != name)
    return names


def _field_type(annotation: object) -> object:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _field_type(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _field_type(arg)
            if inner is not type(None):
                return inner
    return annotation


def _model_at(loc: Location) -> type[BaseModel] | None:
    """The model class that holds the field at ``loc`` (so we can list its allowed fields)."""
    current: object = PolicyDocument
    i = 0
    while i < len(loc):
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(loc[i]))
            if info is None:
                return None
            current = _field_type(info.annotation)
            i += 1
            continue
        origin = typing.get_origin(current)
        if origin in (dict, list):
            current = _field_type(typing.get_args(current)[-1])
            i += 1
            continue
        return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(err: ErrorDetails, loc: Location) -> list[tuple[Location, str]]:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        parent = _model_at(loc[:-1])
        if parent is AllTools and name in ("action", "reason", "on_deny"):
            return [
                (
                    loc,
                    f"'all_tools' cannot carry {name!r}: its limits and conditions apply in addition to the rule "
                    "that matched each call; put actions and reasons on tool rules, 'classes' or 'default'",
                )
            ]
        fields = _fields_of(parent) if parent else []
        allowed = ", ".join(fields) if fields else "see `mcp-guard schema`"
        return [(loc, f"unknown field {name!r}{did_you_mean(name, fields)}; allowed fields: {allowed}")]
    if kind == "missing":
        name = str(loc[-1])
        extra = _MISSING_HELP.get(name)
        return [(loc, f"required field {name!r} is missing" + (f"; {extra}" if extra else ""))]
    if kind in ("value_error", "assertion_error"):
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _Problems):
            return [((*loc, *rel), msg) for rel, msg in error.problems]
        return [(loc, str(error) if error is not None else str(err["msg"]))]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(loc, f"expected a mapping (JSON object), got {describe_type(value)}")]
    if kind in ("list_type", "tuple_type"):
        return [(loc, f"expected a list, got {describe_type(value)}")]
    if kind == "string_type":
        return [(loc, f"expected a string, got {describe_type(value)}")]
    return [(loc, str(err["msg"]))]


def translate(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``[{"path": JSON pointer, "message": ...}]``, without pydantic's URLs."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p != "[key]")
        for where, msg in _message(err, loc):
            out.append({"path": pointer(*where), "message": msg})
    return out


def policy_error(errors: list[dict[str, str]], source: str | None = None) -> PolicyError:
    where = f" {source}" if source else ""
    count = len(errors)
    head = f"invalid policy{where}: {count} problem{'s' if count != 1 else ''}"
    lines = [f"  {e['path'] or '/'}: {e['message']}" for e in errors]
    return PolicyError("\n".join([head, *lines]), errors)


def input_error(message: str, source: str | None = None) -> PolicyInputError:
    """The text could not be read as a policy document at all (one line, no field path)."""
    where = f" {source}" if source else ""
    return PolicyInputError(f"cannot read policy{where}: {message}", [{"path": "", "message": message}])


def check_size(size: int, max_bytes: int, source: str | None = None) -> None:
    if size > max_bytes:
        raise input_error(
            f"the policy is {size:,} bytes, over the limit of {max_bytes:,} (pass max_bytes= to allow more)", source
        )


def decode_text(text: str | bytes, source: str | None = None, max_bytes: int = MAX_POLICY_BYTES) -> str:
    """Policy text as ``str``: bounded in size, UTF-8 (a leading byte-order mark is allowed)."""
    if isinstance(text, str):
        check_size(len(text), max_bytes, source)  # characters: a lower bound on the UTF-8 size
        return text
    check_size(len(text), max_bytes, source)
    try:
        return text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise input_error(
            f"the file is not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start} cannot be decoded); "
            "save it as UTF-8",
            source,
        ) from None


def _too_deep(where: str) -> str:
    return f"the policy is nested more than {MAX_DEPTH} levels deep {where}; a policy needs far fewer"


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _too_long_number(exc: ValueError) -> str:
    # Python refuses to convert integers of more than sys.get_int_max_str_digits() digits (4,300 by default),
    # a guard against quadratic conversion time; no policy needs such a number, so the file cannot be read.
    return f"the file holds a number too long to read ({exc.args[0].split(':')[0].lower() if exc.args else exc})"


def check_json_depth(text: str, source: str | None = None) -> None:
    """Refuse JSON nested deeper than :data:`MAX_DEPTH`, by a linear scan before ``json`` recurses into it."""
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise input_error(_too_deep("(JSON)"), source)
        else:
            depth -= 1


def check_data_depth(doc: object, source: str | None = None) -> None:
    """Refuse a parsed document nested deeper than :data:`MAX_DEPTH` (iterative: never a RecursionError)."""
    stack: list[tuple[object, int, tuple[str, ...]]] = [(doc, 0, ())]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, Mapping):
            items: Iterable[tuple[object, object]] = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            continue
        if depth >= MAX_DEPTH:
            shown = pointer(*where[:6]) + ("/..." if len(where) > 6 else "")
            raise input_error(_too_deep(f"(under {shown})"), source)
        for key, value in items:
            if isinstance(value, (Mapping, list, tuple)):
                stack.append((value, depth + 1, (*where, str(key))))


def validate_document(doc: object, source: str | None = None) -> PolicyDocument:
    """Validate a parsed document, or raise :class:`PolicyError` listing every problem."""
    if doc is None:
        raise policy_error(
            [{"path": "", "message": "the policy is empty; it needs at least 'version' and 'default'"}], source
        )
    check_data_depth(doc, source)
    if not isinstance(doc, Mapping):
        raise policy_error(
            [
                {
                    "path": "",
                    "message": f"a policy must be a mapping (JSON object) at the top level, got {describe_type(doc)}",
                }
            ],
            source,
        )
    try:
        return PolicyDocument.model_validate(dict(doc))
    except ValidationError as exc:
        raise policy_error(translate(exc), source) from None


# -- reading documents ---------------------------------------------------------------------------------


class _Pairs(dict[str, object]):
    """A JSON object that remembers keys it saw more than once (``json`` would silently keep the last)."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, object]]) -> _Pairs:
    obj = _Pairs()
    dups: list[str] = []
    for k, v in pairs:
        if k in obj:
            dups.append(k)
        obj[k] = v
    if dups:
        obj.duplicates = tuple(dups)
    return obj


def _find_duplicates(node: object, where: tuple[str, ...] = ()) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, _Pairs):
        for k in node.duplicates:
            found.append(
                {
                    "path": pointer(*where, k),
                    "message": f"duplicate key {k!r}: JSON would silently keep only the last one; write it once",
                }
            )
        for k, v in node.items():
            found.extend(_find_duplicates(v, (*where, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_find_duplicates(v, (*where, str(i))))
    return found


def _plain(node: object) -> object:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def parse_json(text: str | bytes, source: str | None = None, max_bytes: int = MAX_POLICY_BYTES) -> Any:
    text = decode_text(text, source, max_bytes)
    if not text.strip():
        raise policy_error(
            [{"path": "", "message": "the policy is empty; it needs at least 'version' and 'default'"}], source
        )
    check_json_depth(text, source)
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise policy_error(
            [{"path": "", "message": f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"}], source
        ) from exc
    except ValueError as exc:  # not malformed: an integer past Python's digit limit (int_max_str_digits)
        raise input_error(_too_long_number(exc), source) from None
    dups = _find_duplicates(doc)
    if dups:
        raise policy_error(dups, source)
    return _plain(doc)


@lru_cache(maxsize=1)
def _yaml_loader() -> Any:
    yaml = require_extra("yaml", "yaml", "YAML policies")

    class Loader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        """SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}: YAML would silently keep only the last one; write it once",
                    key_node.start_mark,
                )
            if _hashable(key):
                seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_yaml_events(text: str, source: str | None = None) -> None:
    """Refuse YAML anchors, aliases and deep nesting from the event stream, before any object is built."""
    yaml = require_extra("yaml", "yaml", "YAML policies")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            what = f"alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{event.anchor}"
            raise policy_error(
                [
                    {
                        "path": "",
                        "message": f"YAML anchors and aliases are not allowed in a policy ({what} at line "
                        f"{mark.line + 1} column {mark.column + 1}); write the value out where it is used",
                    }
                ],
                source,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise input_error(_too_deep(f"(YAML, at line {mark.line + 1})"), source)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str | bytes, source: str | None = None, max_bytes: int = MAX_POLICY_BYTES) -> Any:
    loader = _yaml_loader()
    yaml = require_extra("yaml", "yaml", "YAML policies")
    text = decode_text(text, source, max_bytes)
    if not text.strip():
        raise policy_error(
            [{"path": "", "message": "the policy is empty; it needs at least 'version' and 'default'"}], source
        )
    try:
        check_yaml_events(text, source)
        return yaml.load(text, Loader=loader)  # the loader is a SafeLoader subclass
    except PolicyError:  # an anchor, an alias or deep nesting, found by check_yaml_events (a ValueError too)
        raise
    except ValueError as exc:  # the constructor's int(): an integer past Python's digit limit
        raise input_error(_too_long_number(exc), source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise policy_error([{"path": "", "message": f"malformed YAML{at}: {problem}"}], source) from exc


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (for editors and ``mcp-guard schema``)."""
    schema = PolicyDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mcp-guard policy"
    rule = schema.get("$defs", {}).get("Rule", {}).get("properties", {})
    if "reason" in rule:
        rule["on_deny"] = {**rule["reason"], "description": "alias of 'reason'"}
    return schema
