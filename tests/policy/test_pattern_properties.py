"""Property tests: a rule is reached only by the names its pattern matches, byte for byte.

No normalisation of any kind: case variants, doubled underscores and Unicode look-alikes (Cyrillic letters,
fullwidth forms, zero-width characters, ligatures) of a rule's name fall through to ``default``.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mcp_guard import Policy

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=24)
# Names that may hold characters other glob dialects treat as special; here they are literal (spec section 8).
odd_names = st.text(alphabet=NAME_CHARS[:12] + "?[]!-", min_size=1, max_size=24)
# Glob pieces: literal runs, *, and ? / bracket sets (literal characters: only * is a wildcard).
glob_pieces = st.one_of(
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=6),
    st.just("*"),
    st.just("?"),
    st.sampled_from(["[abc]", "[!a]", "[a-z]", "[_0-9]"]),
)
patterns = st.lists(glob_pieces, min_size=1, max_size=5).map("".join)


def star_glob_matches(name: str, pattern: str) -> bool:
    """Independent oracle: a regex where ``*`` is ``.*`` and every other character is escaped."""
    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


CYRILLIC = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "s": "ѕ"}
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def _policy(rules: dict[str, dict[str, str]], default: str) -> Policy:
    return Policy.from_dict({"version": "1", "default": default, "tools": rules})


@settings(max_examples=300, deadline=None)
@given(
    pattern=patterns, name=st.one_of(names, odd_names), action=st.sampled_from(["allow", "deny", "require_approval"])
)
@example(pattern="tool[1]", name="tool1", action="allow")
@example(pattern="tool[1]", name="tool[1]", action="allow")
@example(pattern="a?c", name="abc", action="deny")
def test_a_rule_is_reached_exactly_by_the_names_its_pattern_matches(pattern: str, name: str, action: str) -> None:
    other = {"allow": "deny", "deny": "allow", "require_approval": "deny"}[action]
    policy = _policy({pattern: {"action": action}}, other)
    decision = policy.evaluate(name)
    # Independent oracle: only * is a wildcard, on the full name (no normalisation).
    if star_glob_matches(name, pattern):
        assert decision.rule == "/tools/" + pattern
        assert decision.action == action
    else:
        assert decision.rule == "/default"
        assert policy.exposes(name) is (other != "deny")


@st.composite
def look_alikes(draw: st.DrawFn) -> tuple[str, str]:
    """(name, a variant that looks like it or differs only in case / underscores / invisible characters)."""
    name = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=2, max_size=20))
    assume(any(c.isalpha() for c in name))
    kind = draw(st.sampled_from(["case", "underscore", "cyrillic", "fullwidth", "zero_width", "ligature", "nfkc"]))
    i = draw(st.integers(min_value=0, max_value=len(name) - 1))
    letters = [j for j, c in enumerate(name) if c.isalpha()]
    if kind == "case":
        j = draw(st.sampled_from(letters))
        variant = name[:j] + name[j].upper() + name[j + 1 :]
    elif kind == "underscore":
        variant = name[:i] + "_" + name[i:]
    elif kind == "cyrillic":
        if not any(c in CYRILLIC for c in name):
            name = name[:i] + "a" + name[i:]
        swappable = [j for j, c in enumerate(name) if c in CYRILLIC]
        j = draw(st.sampled_from(swappable))
        variant = name[:j] + CYRILLIC[name[j]] + name[j + 1 :]
    elif kind == "fullwidth":
        j = draw(st.sampled_from(letters))
        variant = name[:j] + chr(ord(name[j]) + 0xFEE0) + name[j + 1 :]
    elif kind == "zero_width":
        variant = name[: i + 1] + draw(st.sampled_from(ZERO_WIDTH)) + name[i + 1 :]
    elif kind == "ligature":
        if "fi" not in name and "fl" not in name:
            name = name[:i] + "fi" + name[i:]
        variant = name.replace("fi", "\ufb01").replace("fl", "\ufb02")
    else:
        # Any character whose NFKC form is a letter of the name: mathematical bold, circled, etc.
        j = draw(st.sampled_from(letters))
        base = ord(name[j]) - ord("a")
        variant = name[:j] + chr(0x1D41A + base) + name[j + 1 :]  # MATHEMATICAL BOLD SMALL
    assume(variant != name)
    return name, variant


@settings(max_examples=400, deadline=None)
@given(pair=look_alikes(), action=st.sampled_from(["allow", "deny", "require_approval"]))
@example(pair=("get_balance", "GET_BALANCE"), action="deny")
@example(pair=("get_balance", "get__balance"), action="allow")
@example(pair=("get_balance", "Get_Balance"), action="allow")
@example(pair=("get_balance", "get_bаlance"), action="deny")  # Cyrillic а
@example(pair=("get_balance", "ｇet_balance"), action="allow")  # fullwidth g
@example(pair=("get_balance", "get_bal\u200dance"), action="deny")  # zero-width joiner
def test_look_alikes_fall_to_default(pair: tuple[str, str], action: str) -> None:
    name, variant = pair
    default = "allow" if action != "allow" else "deny"
    policy = _policy({name: {"action": action}, f"srv/{name}": {"action": action}}, default)
    assert policy.evaluate(name).rule == f"/tools/{name}"
    for server in (None, "srv"):
        decision = policy.evaluate(variant, server=server)
        assert decision.rule == "/default", (variant, decision)
        assert decision.action == default
        if default == "deny":
            assert decision.code == "default_deny"


@settings(max_examples=200, deadline=None)
@given(pair=look_alikes())
def test_look_alikes_are_not_normalised_away(pair: tuple[str, str]) -> None:
    # Guard against a future "helpful" normalisation: NFKC-equal or case-equal names still differ here.
    name, variant = pair
    policy = _policy({name: {"action": "deny", "reason": "exact"}}, "allow")
    if unicodedata.normalize("NFKC", variant).lower() == name.lower():
        assert policy.evaluate(variant).allowed
        assert policy.exposes(variant)
    assert not policy.exposes(name)


@settings(max_examples=200, deadline=None)
@given(server=names, other=names, name=names)
def test_server_qualified_rules_need_that_exact_server(server: str, other: str, name: str) -> None:
    other = other + server if other != server else server + "_"  # a different server, often sharing a prefix
    policy = _policy({f"{server}/{name}": {"action": "allow"}}, "deny")
    assert policy.evaluate(name, server=server).allowed
    assert policy.evaluate(name, server=other).code == "default_deny"
    assert policy.evaluate(name).code == "default_deny"
    assert policy.evaluate(name, server=server.swapcase()).code == (
        "default_deny" if server.swapcase() != server else None
    )


def _literals(glob: str) -> int:
    return len(glob.replace("*", ""))


STRICT = {"allow": 0, "require_approval": 1, "deny": 2}


@settings(max_examples=300, deadline=None)
@given(
    rules=st.dictionaries(
        st.one_of(names, patterns), st.sampled_from(["allow", "deny", "require_approval"]), min_size=1, max_size=8
    ),
    name=st.one_of(names, odd_names),
)
def test_precedence_against_a_brute_force_oracle(rules: dict[str, str], name: str) -> None:
    policy = _policy({p: {"action": a} for p, a in rules.items()}, "deny")
    decision = policy.evaluate(name)
    matching = [p for p in rules if star_glob_matches(name, p)]
    if not matching:
        assert decision.rule == "/default"
        return
    if name in rules and "*" not in name:
        best = [name]  # exact before glob
    else:
        top = max(_literals(p) for p in matching)
        best = [p for p in matching if _literals(p) == top]
    strictest = max(best, key=lambda p: STRICT[rules[p]])
    assert decision.action == rules[strictest]
    assert decision.rule == "/tools/" + next(p for p in best if rules[p] == rules[strictest])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FUZZ_POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["h*"],
    "all_tools": {"limits": [{"counter": "all", "window": 60, "max": 100, "scope": "session"}]},
    "tools": {
        "pay": {
            "args_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
            "require": {"args.cur": {"in": ["USD", "EUR"]}, "identity": {"regex": "^[a-z]+$"}},
            "deny_if": {"args.amount": {"gt": 1000}, "args.memo": {"contains": "drop"}, "args.to.0": {"glob": "x*"}},
            "approve_if": {"args.amount": {"gte": 100}, "args.tags": {"contains": "big"}},
            "limits": [{"counter": "spend", "window": "day", "max": 5000, "cost": "args.amount"}],
        },
        "*": {"require": {"args.a.b": {"exists": False}}, "deny_if": {"args.n": {"lt": 0}, "args.s": {"eq": "x"}}},
    },
}


@functools.cache
def _fuzz_policy() -> Policy:
    return Policy.from_dict(FUZZ_POLICY)


@settings(max_examples=400, deadline=None)
@given(
    tool=st.sampled_from(["pay", "other", "hx"]),
    args=st.dictionaries(
        st.sampled_from(["amount", "cur", "memo", "to", "tags", "a", "n", "s", "x"]), json_values, max_size=6
    ),
    identity=st.none() | st.text(max_size=8),
    session=st.none() | st.text(max_size=8),
)
def test_any_arguments_give_a_decision_never_an_exception(
    tool: str, args: dict[str, object], identity: str | None, session: str | None
) -> None:
    decision = _fuzz_policy().evaluate(tool, args, identity=identity, session=session)
    assert decision.action in ("allow", "deny", "require_approval")
    if decision.denied:
        assert decision.code in ("hidden", "invalid_arguments", "requirement_failed", "denied")
        assert decision.rule
        assert decision.reason
        decision.to_json()  # the payload always serialises
