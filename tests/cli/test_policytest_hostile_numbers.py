"""``mcp-guard test``: a case file with a non-finite or absurd number is bad input (exit 2), never run.

Before: ``advance_s: .inf`` was accepted; the fake clock went to infinity, every window stopped counting, and
the report said the policy admitted calls it refuses. Each case here goes through the real command and must
exit 2 with one line on stderr naming the case and the field, and print no report at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_guard._cli.main import main
from mcp_guard._cli.policytest import MAX_ADVANCE_S

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"pay": {"rate_limit": "1/minute", "deny_if": {"args.amount": {"gt": 100}}}},
}
TEN_YEARS = MAX_ADVANCE_S


def suite(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p.json").write_text(json.dumps(POLICY), encoding="utf-8")
    path = tmp_path / "cases.yaml"
    path.write_text("policy: p.json\ncases:\n" + text, encoding="utf-8")
    return path


def steps(*lines: str) -> str:
    return "  - name: the case\n    steps:\n" + "".join(f"      - {line}\n" for line in lines)


FIRST = "{tool: pay, expect: {action: allow}}"
BAD = {
    "advance_s .inf (the window stops counting)": (
        steps(FIRST, "{tool: pay, advance_s: .inf, expect: {action: allow}}"),
        "/cases/0/steps/1/advance_s",
    ),
    "advance_s .nan": (steps(FIRST, "{tool: pay, advance_s: .nan, expect: {action: allow}}"), "steps/1/advance_s"),
    "advance_s -.inf": (steps("{tool: pay, advance_s: -.inf, expect: {action: allow}}"), "steps/0/advance_s"),
    "advance_s negative": (steps("{tool: pay, advance_s: -1, expect: {action: allow}}"), "steps/0/advance_s"),
    "advance_s over 10 years": (
        steps(f"{{tool: pay, advance_s: {TEN_YEARS + 1}, expect: {{action: allow}}}}"),
        "less than or equal to",
    ),
    "advance_s 1e300": (steps("{tool: pay, advance_s: 1.0e+300, expect: {action: allow}}"), "steps/0/advance_s"),
    "steps that move the clock over 10 years in all": (
        steps(*[f"{{tool: pay, advance_s: {TEN_YEARS // 2}, expect: {{action: allow}}}}"] * 3),
        "over the limit of 315,576,000 s",
    ),
    "a single call with advance_s .inf": (
        "  - {name: the case, tool: pay, advance_s: .inf, expect: {action: allow}}\n",
        "/cases/0/advance_s",
    ),
    "repeat over the cap": (steps("{tool: pay, repeat: 100001, expect: {action: allow}}"), "steps/0/repeat"),
    "repeat a boolean": (steps("{tool: pay, repeat: true, expect: {action: allow}}"), "steps/0/repeat"),
    "calls over the file's cap": (
        steps(*["{tool: pay, repeat: 100000}"] * 11),
        "step 11, repeat: the cases make over 1,000,000 calls",
    ),
    "an argument .inf": (steps("{tool: pay, args: {amount: .inf}, expect: {action: allow}}"), "args.amount"),
    "a nested argument .nan": (
        steps("{tool: pay, args: {order: {legs: [1, .nan]}}, expect: {action: allow}}"),
        "args.order.legs[1]",
    ),
    "an annotation .inf": (
        steps("{tool: pay, annotations: {weight: .inf}, expect: {action: allow}}"),
        "annotations.weight",
    ),
    "an approver's edit .nan": (
        steps("{tool: pay, approve: {edit: {amount: .nan}}, expect: {action: allow}}"),
        "edit.amount",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_numbers_exit_2_naming_the_case_and_field(tmp_path: Path, capsys: Any, name: str) -> None:
    text, field = BAD[name]
    assert main(["test", str(suite(tmp_path, text))]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no report: nothing was run
    assert len(err.strip().splitlines()) == 1, err
    assert "case 'the case'" in err
    assert field in err
    assert "Traceback" not in err


def test_the_same_numbers_in_json_are_refused_too(tmp_path: Path, capsys: Any) -> None:
    # JSON has no .inf; Python's reader takes Infinity and 1e400 (which reads as inf).
    (tmp_path / "p.json").write_text(json.dumps(POLICY), encoding="utf-8")
    for number in ("Infinity", "1e400", "NaN"):
        path = tmp_path / "cases.json"
        path.write_text(
            '{"policy": "p.json", "cases": [{"name": "j", "tool": "pay", "advance_s": '
            + number
            + ', "expect": {"action": "allow"}}]}',
            encoding="utf-8",
        )
        assert main(["test", str(path)]) == 2, number
        err = capsys.readouterr().err
        assert "case 'j'" in err
        assert "/cases/0/advance_s" in err


def test_ten_years_is_still_a_fine_step(tmp_path: Path, capsys: Any) -> None:
    # The bounds refuse nonsense, not long tests: a window checked across the largest allowed step.
    text = steps(
        "{tool: pay, expect: {action: allow}}",
        "{tool: pay, expect: {code: rate_limited}}",
        f"{{tool: pay, advance_s: {TEN_YEARS}, expect: {{action: allow}}}}",
        "{tool: pay, expect: {code: rate_limited}}",  # the window still counts after the jump
    )
    assert main(["test", str(suite(tmp_path, text))]) == 0, capsys.readouterr().err
    assert "4 checks: 4 passed, 0 failed" in " ".join(capsys.readouterr().out.split())


def test_the_schema_says_the_bounds(capsys: Any) -> None:
    assert main(["schema", "--cases"]) == 0
    schema = json.loads(capsys.readouterr().out)
    advance = schema["$defs"]["Step"]["properties"]["advance_s"]
    assert (advance["minimum"], advance["maximum"]) == (0, MAX_ADVANCE_S)
    assert yaml.safe_load("x: .inf")["x"] == float("inf")  # what a YAML case file can say, and is refused above
