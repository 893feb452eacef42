"""Bounded inputs (issue 9, spec section 8): ReDoS-proof regexes and policy files that cannot exhaust the
loader (YAML alias bombs, huge or deeply nested files, bytes that are not UTF-8).

Timing bounds here are the hard limits the issue asks for, with generous margins; figures live in
``benchmarks/decision.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Policy, PolicyError

BOMB = (
    'version: "1"\ndefault: deny\n'
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "tools: {x: {description: *i}}\n"
)


def test_redos_pattern_decides_on_100k_characters_in_under_10_ms() -> None:
    policy = Policy.from_dict(
        {"version": "1", "default": "allow", "tools": {"t": {"deny_if": {"args.s": {"regex": "^(a+)+$"}}}}}
    )
    evil = "a" * 100_000 + "!"
    policy.evaluate("t", {"s": "warm"})
    best = min(_timed(lambda: policy.evaluate("t", {"s": evil})) for _ in range(3))
    assert best < 0.010, f"{best * 1000:.2f} ms"
    assert policy.evaluate("t", {"s": evil}).allowed
    assert policy.evaluate("t", {"s": "a" * 100_000}).code == "denied"


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize(
    ("pattern", "field"),
    [("(a)\\1", "deny_if"), ("^(?=admin)", "require"), ("(?<!x)y", "approve_if"), ("(?P<n>a)(?P=n)", "deny_if")],
)
def test_regex_re2_cannot_take_is_a_load_error_naming_pattern_and_path(pattern: str, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict({"version": "1", "default": "deny", "tools": {"t": {field: {"args.s": {"regex": pattern}}}}})
    (error,) = info.value.errors
    assert error["path"] == f"/tools/t/{field}/args.s/regex"
    assert repr(pattern) in error["message"]
    assert "RE2" in error["message"]


def test_yaml_alias_bomb_is_refused_fast() -> None:
    assert len(BOMB.encode()) < 600
    start = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        Policy.from_yaml(BOMB)
    assert time.perf_counter() - start < 1.0
    assert "anchors and aliases are not allowed" in str(info.value)
    assert "line 3" in str(info.value)


def test_a_single_yaml_anchor_is_refused_too() -> None:
    with pytest.raises(PolicyError, match="anchor &r"):
        Policy.from_yaml('version: "1"\ndefault: deny\ntools:\n  a: &r {action: deny}\n  b: *r\n')
    with pytest.raises(PolicyError, match="anchors and aliases"):
        Policy.from_yaml('version: "1"\ndefault: deny\nx: &k 1\n')


def test_size_cap_default_and_configurable(tmp_path: Path) -> None:
    doc = {"version": "1", "default": "deny", "description": "x" * 6_000_000}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match="over the limit of 5,242,880"):
        Policy.load(path)  # refused from the file's size, before reading it
    small = json.dumps({"version": "1", "default": "deny"})
    small_path = tmp_path / "small.json"
    small_path.write_text(small)
    with pytest.raises(PolicyError, match="over the limit of 20"):
        Policy.load(small_path, max_bytes=20)
    assert Policy.load(small_path, max_bytes=len(small)).default == "deny"
    with pytest.raises(PolicyError, match="over the limit of 10"):
        Policy.from_json(small, max_bytes=10)
    with pytest.raises(PolicyError, match="over the limit"):
        Policy.from_yaml(small, max_bytes=10)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        '{"a":' * 100_000,
        '{"version": "1", "default": "deny", "description": ' + "[" * 65 + "]" * 65 + "}",
    ],
)
def test_deep_json_is_refused_without_recursion_error(text: str) -> None:
    with pytest.raises(PolicyError, match="nested more than 64 levels"):
        Policy.from_json(text)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"version": "1", "default": "deny", "description": "[" * 1000 + '\\"{' * 100})
    assert Policy.from_json(text).description is not None


def test_deep_yaml_and_deep_dicts_are_refused() -> None:
    with pytest.raises(PolicyError, match="nested more than 64 levels"):
        Policy.from_yaml("a: " + "[" * 2_000)
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(10_000):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(PolicyError, match="nested more than 64 levels"):
        Policy.from_dict({"version": "1", "default": "deny", "tools": {"t": {"args_schema": deep}}})


def test_non_utf8_is_a_load_error_with_a_message(tmp_path: Path) -> None:
    for name in ("p.json", "p.yaml"):
        path = tmp_path / name
        path.write_bytes(b'{"version": "1", "default": "deny", "name": "caf\xe9"}')
        with pytest.raises(PolicyError, match=r"not UTF-8 text \(byte 0xe9 at offset"):
            Policy.load(path)
    # A UTF-8 byte-order mark is fine.
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"version": "1", "default": "deny"}).encode())
    assert Policy.load(bom).default == "deny"


def test_schema_key_is_accepted_and_not_part_of_the_hash() -> None:
    plain = Policy.from_dict({"version": "1", "default": "deny"})
    hinted = Policy.from_dict({"$schema": "./policy.schema.json", "version": "1", "default": "deny"})
    assert hinted.hash == plain.hash
    assert "$schema" in Policy.json_schema()["properties"]
    with pytest.raises(PolicyError, match="expected a string"):
        Policy.from_dict({"$schema": 5, "version": "1", "default": "deny"})
