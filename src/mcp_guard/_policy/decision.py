"""The result of evaluating one tool call: :class:`Decision`, the limits it charges, and the violation payload."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

Action = Literal["allow", "deny", "require_approval"]
Code = Literal[
    "hidden",
    "denied",
    "default_deny",
    "invalid_arguments",
    "requirement_failed",
    "rate_limited",
    "approval_required",
    "approval_denied",
    "approval_timeout",
    "guard_unavailable",
    "untrusted_argument",
    "secret_egress",
    "result_withheld",
    "tool_changed",
    "identity_required",
]
Scope = Literal["grant", "identity", "session", "global", "tool"]

CODES: tuple[str, ...] = get_args(Code)
#: A refusal as the model sees it (spec section 5): a JSON object.
Payload = dict[str, Any]  # the codes of spec section 5, in its order

# "grant" is PolicyLayer's word for "per caller identity": both scopes share one budget.
_SCOPE_KIND = {
    "grant": "identity",
    "identity": "identity",
    "session": "session",
    "global": "global",
    "tool": "tool",
}


def escape_key_part(part: str) -> str:
    """Percent-escape ``:`` (and ``%``) in one part of a store key."""
    # Percent-escape the separator so ("a:b", "c") and ("a", "b:c") can never make the same key.
    return part.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True, slots=True)
class LimitCharge:
    """One rate limit a call is subject to, resolved for that call.

    ``key`` identifies the budget: limits with the same counter and scope key share it, across tools.
    """

    counter: str
    scope: Scope
    scope_id: str
    window_s: float
    max: int
    cost: int
    rule: str
    count_failures: bool = False
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = _SCOPE_KIND[self.scope]
        object.__setattr__(self, "key", f"{escape_key_part(self.counter)}:{kind}:{escape_key_part(self.scope_id)}")

    def describe(self, tool: str) -> str:
        """Human text, e.g. ``git_log is limited to 30 calls per minute``."""
        unit = ("call" if self.max == 1 else "calls") if self.cost == 1 else ("unit" if self.max == 1 else "units")
        return f"{tool} is limited to {self.max} {unit} per {_window_text(self.window_s)}"


def _window_text(window_s: float) -> str:
    words = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
    word = words.get(float(window_s))
    return word if word else f"{window_s:g} s"


_HINTS: dict[str, str] = {
    "hidden": "This tool is not available. Do not call it again.",
    "denied": "The policy forbids this call. Do not retry it; choose another approach or ask the user.",
    "default_deny": "No rule allows {tool}. Do not retry it; choose another tool or ask the user.",
    "invalid_arguments": "Fix the arguments as the reason says, then call {tool} again.",
    "requirement_failed": "The arguments do not meet the policy's requirements. Change them as the reason says "
    "or do not retry.",
    "approval_required": "{tool} needs a human's approval and none could be asked. Do not retry; tell the user.",
    "approval_denied": "A human declined this call. Do not retry it; ask the user how to proceed.",
    "approval_timeout": "No human answered in time. Do not retry now; tell the user the call needs approval.",
    "guard_unavailable": "The policy guard could not check this call. Try again later.",
    "untrusted_argument": "An argument's value did not come from the user or a trusted source. Do not retry it with "
    "that value; use values the user gave, or ask the user.",
    "secret_egress": "The arguments hold a secret this session saw. Do not send it; leave it out or ask the user.",
    "result_withheld": "{tool} ran, but the policy withholds its result. Do not call it again for this; tell the user.",
    "tool_changed": "{tool} is not the tool that was reviewed. Do not retry it; tell the user it needs review.",
    "identity_required": "{tool} needs to know who is calling, and this call did not say. Do not retry it; tell "
    "the user to sign in or run it with their identity.",
}


# json.dumps with options builds a new encoder on every call; one built here writes the same text.
_PAYLOAD_JSON = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def round_up(seconds: float) -> float:
    """Round a wait up to 0.01 s, so that waiting the printed time is always enough."""
    return math.ceil(max(seconds, 0.0) * 100.0) / 100.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one call.

    ``action`` is ``allow``, ``deny`` or ``require_approval``. A ``deny`` has a ``code`` (one of
    :data:`CODES`), a ``rule`` pointer into the policy and a ``reason``. ``limits`` are the rate limits the
    call would be charged (the guard checks and reserves them). Build with :meth:`allow`, :meth:`deny`,
    :meth:`require_approval`; turn a refusal into what the model sees with :meth:`to_payload`.

    A frozen dataclass with a faster ``__init__`` (see :func:`_slot_init`): the guard builds a decision for
    every refusal it makes itself (a rate limit, an approval declined), and a refusal should cost no more
    than an allow.
    """

    action: Action
    tool: str
    server: str | None = None
    code: Code | None = None
    rule: str | None = None
    reason: str | None = None
    limits: tuple[LimitCharge, ...] = ()
    retry_after_s: float | None = None
    policy: str | None = None
    risk_class: str | None = None
    approval_timeout_s: float | None = None
    approval_description: str | None = None
    redact: tuple[str, ...] = ()
    retry: bool | None = None
    """The rule's ``retry``: True/False forces upstream retries on/off; None leaves it to the tool's annotations."""
    pin: tuple[str | None, str] | None = None
    """For a tool that differs from the pinned one: the pinned hash (None for a new tool) and the listed one."""

    # -- named constructors -------------------------------------------------------------------------
    @classmethod
    def allow(cls, tool: str, **fields: Any) -> Decision:
        return cls("allow", tool, **fields)

    @classmethod
    def deny(cls, tool: str, code: Code, **fields: Any) -> Decision:
        return cls("deny", tool, code=code, **fields)

    @classmethod
    def require_approval(cls, tool: str, **fields: Any) -> Decision:
        return cls(action="require_approval", tool=tool, **fields)

    # -- the refusals the guard makes itself, one constructor each ------------------------------------
    @classmethod
    def malformed(
        cls,
        tool: str,
        problem: str | None,
        *,
        server: str | None = None,
        policy: str | None = None,
        redact: tuple[str, ...] = (),
    ) -> Decision:
        """``invalid_arguments``: arguments the policy cannot judge as given (not a JSON object, a number that is
        not finite, a value the tool's schema does not take); ``problem`` says which."""
        return cls("deny", tool, server, "invalid_arguments", None, problem, policy=policy, redact=redact)

    @classmethod
    def unavailable(
        cls,
        tool: str,
        reason: str | None = None,
        *,
        server: str | None = None,
        rule: str | None = None,
        policy: str | None = None,
        redact: tuple[str, ...] = (),
    ) -> Decision:
        """``guard_unavailable``: the guard could not check the call (its own fault, the evaluator's, a store's)."""
        return cls("deny", tool, server, "guard_unavailable", rule, reason, policy=policy, redact=redact)

    def rejected(self, reason: str | None = None) -> Decision:
        """``approval_denied``: this call, declined by a human (``reason``: theirs, if they gave one)."""
        return self.violation("approval_denied", reason=reason or "a human declined this call")

    def no_approver(self) -> Decision:
        """``approval_required``: this call needs a human's approval and the guard has no one to ask."""
        return self.violation(
            "approval_required", reason=self.reason or f"{self.tool} requires a human's approval and no approver is set"
        )

    def rate_limited(self, charge: LimitCharge | None, retry_after_s: float | None) -> Decision:
        """``rate_limited``: this call, refused by the budget of ``charge`` (the limit that is spent, if known)."""
        return self.violation(
            "rate_limited",
            reason=charge.describe(self.tool) if charge is not None else f"{self.tool} is rate limited",
            rule=charge.rule if charge is not None else self.rule,
            retry_after_s=retry_after_s,
        )

    # -- reading ------------------------------------------------------------------------------------
    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def denied(self) -> bool:
        return self.action == "deny"

    @property
    def needs_approval(self) -> bool:
        return self.action == "require_approval"

    def replace(self, **changes: Any) -> Decision:
        """A copy with ``changes`` applied (decisions are immutable); an unknown field is a ``TypeError``."""
        values = list(_ALL_FIELDS(self))
        for name, value in changes.items():
            index = _INDEX.get(name)
            if index is None:
                raise TypeError(f"Decision has no field {name!r}")
            values[index] = value
        return Decision(*values)

    def violation(
        self,
        code: Code,
        *,
        reason: str | None = None,
        rule: str | None = None,
        retry_after_s: float | None = None,
    ) -> Decision:
        """This call refused with ``code``, keeping tool, server, policy and (unless given) rule and reason."""
        return Decision(
            "deny",
            self.tool,
            self.server,
            code,
            rule if rule is not None else self.rule,
            reason if reason is not None else self.reason,
            self.limits,
            None if retry_after_s is None else round_up(retry_after_s),
            self.policy,
            self.risk_class,
            self.approval_timeout_s,
            self.approval_description,
            self.redact,
            self.retry,
            self.pin,
        )

    @property
    def hint(self) -> str | None:
        """What the model should do next, in one sentence."""
        if self.code is None:
            return None
        if self.code == "rate_limited":
            if self.retry_after_s is None:
                return f"This call exceeds the limit for {self.tool} outright. Do not retry it."
            return f"Wait at least {self.retry_after_s:g} s before calling {self.tool} again."
        return _HINTS[self.code].format(tool=self.tool)

    def to_payload(self) -> Payload:
        """The JSON object of spec section 5; fields that do not apply are left out."""
        if self.retry_after_s is not None:  # a wait is a value: built each time
            return self._payload()
        key = _PAYLOAD_KEY(self)
        try:
            payload = _PAYLOADS.get(key)
        except TypeError:  # a field that is not hashable (not built by the policy): no memo
            return self._payload()
        if payload is None:
            payload = _remember(_PAYLOADS, key, self._payload())
        return payload.copy()  # the caller's to change

    def to_json(self) -> str:
        """:meth:`to_payload` as compact JSON text: what a framework hands the model as the tool result."""
        if self.retry_after_s is not None:
            return _PAYLOAD_JSON(self._payload())
        key = _PAYLOAD_KEY(self)
        try:
            text = _TEXTS.get(key)
        except TypeError:
            return _PAYLOAD_JSON(self._payload())
        if text is None:
            text = _remember(_TEXTS, key, _PAYLOAD_JSON(self._payload()))
        return text

    def _payload(self) -> Payload:
        payload: Payload = {"error": "policy_violation", "code": self.code, "tool": self.tool}
        if self.server is not None:
            payload["server"] = self.server
        if self.reason is not None:
            payload["reason"] = self.reason
        if self.rule is not None:
            payload["rule"] = self.rule
        if self.retry_after_s is not None:
            payload["retry_after_s"] = self.retry_after_s
        hint = self.hint
        if hint is not None:
            payload["hint"] = hint
        if self.policy is not None:
            payload["policy"] = self.policy
        return payload


_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))
_INDEX = {name: i for i, name in enumerate(_FIELDS)}
_ALL_FIELDS = operator.attrgetter(*_FIELDS)  # every field's value, in order, in one call (for replace)


def _slot_init(cls: type) -> Callable[..., None]:
    """An ``__init__`` for a frozen slots dataclass, written from its fields as ``dataclasses`` writes its own.

    The generated one sets each field through ``object.__setattr__`` (a name lookup and a generic attribute
    write per field); this one calls each slot's own descriptor, which writes past the frozen ``__setattr__``
    the same way, in about half the time. Same parameters, defaults and order: the fields stay the one list.
    Kept on purpose (0.3 review): measured again against the generated ``__init__``, it builds a Decision in
    ~0.55x the time, and a refusal the guard makes builds one or two (``violation``, ``replace``).
    """
    fields = dataclasses.fields(cls)
    namespace: dict[str, object] = {}
    params: list[str] = []
    for f in fields:
        namespace[f"_put_{f.name}"] = getattr(cls, f.name).__set__  # the class built by slots=True
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _put_{f.name}(self, {f.name})" for f in fields)
    exec(f"def __init__(self, {', '.join(params)}):{body}", namespace)  # our own field names only, as dataclasses does
    init = namespace["__init__"]
    generated: Callable[..., None] = cls.__init__  # type: ignore[misc]
    functools.update_wrapper(init, generated)  # type: ignore[arg-type]
    return init  # type: ignore[return-value]


setattr(Decision, "__init__", _slot_init(Decision))  # noqa: B010  # mypy keeps the dataclass signature

# A refusal's payload is precomputed: without a wait in it, it depends only on these fields, which quote no
# argument value, so a policy gives a small set of them. Both memos are bounded; a full one starts over.
_PAYLOAD_KEY = operator.attrgetter("code", "tool", "server", "reason", "rule", "policy")
_MEMO_MAX = 4096
_PAYLOADS: dict[tuple[object, ...], Payload] = {}
_TEXTS: dict[tuple[object, ...], str] = {}
_Memo = TypeVar("_Memo")


def _remember(memo: dict[tuple[object, ...], _Memo], key: tuple[object, ...], value: _Memo) -> _Memo:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value
