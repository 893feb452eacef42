"""``mcp-guard test``: the example suite passes, a wrong expectation fails (exit 1), bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mcp_guard._cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
SUITE = EXAMPLES / "exchange.tests.yaml"
POLICY = EXAMPLES / "exchange.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_guard._cli.main", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_example_suite_passes_through_the_real_command() -> None:
    done = cli("test", str(SUITE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    cases = yaml.safe_load(SUITE.read_text(encoding="utf-8"))["cases"]
    checks = sum(len(c["steps"]) if "steps" in c else 1 for c in cases)
    assert f"{checks} checks: {checks} passed, 0 failed" in done.stdout


def write_suite(tmp_path: Path, cases: list[dict[str, Any]], policy: Path | str = POLICY) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"policy": str(policy), "cases": cases}), encoding="utf-8")
    return path


def test_a_wrong_expectation_is_caught(tmp_path: Path) -> None:
    suite = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    # The 31st listen key in a minute is refused; claim it is allowed.
    case = next(c for c in suite["cases"] if c["name"].startswith("30 listen keys"))
    case["steps"][1]["expect"] = {"action": "allow"}
    path = write_suite(tmp_path, suite["cases"])
    done = cli("test", str(path))
    assert done.returncode == 1
    assert "1 failed" in done.stdout
    assert "FAIL" in done.stdout
    assert "expected allow, got deny" in " ".join(done.stdout.split())


def test_a_wrong_rule_or_code_is_caught_in_process(tmp_path: Path, capsys: Any) -> None:
    path = write_suite(
        tmp_path,
        [
            {"name": "right", "tool": "get_balance", "expect": {"action": "allow"}},
            {"name": "wrong code", "tool": "delete_api_key", "expect": {"code": "denied"}},
            {"name": "wrong rule", "tool": "withdraw_all", "expect": {"code": "default_deny", "rule": "/tools/x"}},
        ],
    )
    assert main(["test", str(path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "code: expected denied, got hidden" in out
    assert "rule: expected /tools/x, got /default" in out
    assert "3 checks: 1 passed, 2 failed" in out


def test_a_sequence_moves_the_fake_clock(tmp_path: Path, capsys: Any) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "tools": {"t": {"rate_limit": "2/10s"}}}))
    steps = [
        {"tool": "t", "repeat": 3, "expect": {"code": "rate_limited"}},
        {"tool": "t", "advance_s": 9.9, "expect": {"code": "rate_limited"}},
        {"tool": "t", "advance_s": 0.2, "expect": {"action": "allow"}},
    ]
    assert main(["test", str(write_suite(tmp_path, [{"name": "window", "steps": steps}], policy))]) == 0


def test_a_shadow_policy_is_tested_on_its_would_be_decisions(tmp_path: Path, capsys: Any) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "default": "deny", "mode": "shadow"}))
    path = write_suite(tmp_path, [{"name": "would deny", "tool": "x", "expect": {"code": "default_deny"}}], policy)
    assert main(["test", str(path), "-v"]) == 0
    assert "(shadow)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cases: [{name: x, tool: t}]", "needs 'expect'"),
        ("cases: [{name: x, tool: t, expect: {}}]", "at least one of action, code, rule"),
        ("cases: [{name: x, tool: t, expect: {code: nope}}]", "/cases/0/expect/code"),
        ("cases: [{name: x, tool: t, expect: {action: allow}, repeat: 0}]", "/cases/0/repeat"),
        ("cases: [{name: x, tool: t, expect: {action: allow}, colour: red}]", "colour"),
        ("cases: [{name: x, tool: t, expect: {action: allow}}]", "names no policy"),
        ("cases: [{name: x, tool: t\n", "malformed YAML"),
    ],
)
def test_bad_case_files_exit_2_with_one_line(tmp_path: Path, capsys: Any, content: str, message: str) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(content, encoding="utf-8")
    assert main(["test", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_files_and_bad_policies(tmp_path: Path, capsys: Any) -> None:
    assert main(["test", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1", "default": "maybe"}')
    path = write_suite(tmp_path, [{"name": "x", "tool": "t", "expect": {"action": "allow"}}], bad)
    assert main(["test", str(path)]) == 1
    assert "/default" in capsys.readouterr().err
    assert main(["test", str(path), "--policy", str(POLICY)]) == 1  # --policy wins; the case itself fails
    assert "1 failed" in capsys.readouterr().out


def test_the_case_schema_describes_the_example_suite(capsys: Any) -> None:
    assert main(["schema", "--cases"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "mcp-guard test cases"
    jsonschema.validate(yaml.safe_load(SUITE.read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"cases": [{"name": "x", "tool": "t", "repeat": "many"}]}, schema)
