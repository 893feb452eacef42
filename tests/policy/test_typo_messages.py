"""Typos get a "did you mean", and a line and column, in policies and in ``mcp-guard test`` case files; ``test``
writes plain lines into a pipe and a table only on a terminal."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mcp_guard import Policy, PolicyError
from mcp_guard._cli.main import main
from mcp_guard._cli.policytest import print_results, run_file

POLICY = {"version": "1", "default": "deny", "tools": {"pay": {}}}
BOX = set("┏┃┡│└━┳╇┴")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_guard._cli.main", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_a_misspelt_policy_field_or_operator_gets_a_suggestion() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict({**POLICY, "tools": {"pay": {"deny_iff": {"args.amount": {"gtt": 5}}}}})
    [problem] = caught.value.errors
    assert problem["message"].startswith("unknown field 'deny_iff' (did you mean 'deny_if'?); allowed fields: ")
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict({**POLICY, "tools": {"pay": {"deny_if": {"args.amount": {"gtt": 5}}}}})
    assert "unknown operator 'gtt' (did you mean 'gt'?)" in str(caught.value)
    with pytest.raises(PolicyError) as caught:  # nothing close: no guess
        Policy.from_dict({**POLICY, "tools": {"pay": {"colour": "red"}}})
    assert "did you mean" not in str(caught.value)


def test_test_names_the_policy_typo_with_line_and_column(tmp_path: Path, capsys: Any) -> None:
    write(tmp_path, "p.yaml", 'version: "1"\ndefault: deny\ntools:\n  pay:\n    deny_iff: {args.amount: {gt: 5}}\n')
    cases = write(tmp_path, "c.yaml", "policy: p.yaml\ncases:\n  - {name: x, tool: pay, expect: {action: allow}}\n")
    assert main(["test", str(cases)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'p.yaml'}:5:5: /tools/pay/deny_iff: unknown field 'deny_iff' (did you mean 'deny_if'?); "
        "allowed fields: action, reason, on_deny, limits, rate_limit, require, deny_if, approve_if, args_schema, "
        "approval, redact, description, mode, result, retry, results"
    ]


def test_a_case_file_typo_gets_our_wording_a_suggestion_and_a_position(tmp_path: Path, capsys: Any) -> None:
    write(tmp_path, "p.json", '{"version": "1", "default": "deny", "tools": {"pay": {}}}')
    cases = write(
        tmp_path,
        "c.yaml",
        "policy: p.json\ncases:\n  - name: x\n    tool: pay\n    expct: {action: allow}\n"
        "  - {name: y, tool: pay, approve: {edi: {}}, expect: {action: alow}}\n",
    )
    assert main(["test", str(cases)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"mcp-guard: {cases}:5:5: not a valid case file: /cases/0/expct: unknown field 'expct' "
        "(did you mean 'expect'?); allowed fields: name, tool, server, args,"
    )
    # The others follow, each with its position; "not a boolean" is left out beside the mapping's own problems.
    assert "/cases/1/approve/edi (line 6, column 36): unknown field 'edi' (did you mean 'edit'?)" in line
    assert "/cases/1/expect/action (line 6, column 55): input should be 'allow', 'deny' or 'require_approval'" in line
    assert "Extra inputs are not permitted" not in line
    assert "valid boolean" not in line


def test_a_json_case_file_typo_is_located_too(tmp_path: Path, capsys: Any) -> None:
    write(tmp_path, "p.json", '{"version": "1", "default": "deny", "tools": {"pay": {}}}')
    cases = write(
        tmp_path, "c.json", '{"policy": "p.json",\n "cases": [{"name": "x", "tool": "pay", "expect": {"cod": "x"}}]}'
    )
    assert main(["test", str(cases)]) == 2
    err = capsys.readouterr().err
    assert f"{cases}:2:" in err
    assert "/cases/0/expect/cod: unknown field 'cod' (did you mean 'code'?); allowed fields: action, code, rule" in err


def test_test_writes_plain_lines_into_a_pipe(tmp_path: Path) -> None:
    write(tmp_path, "p.json", '{"version": "1", "default": "deny", "tools": {"pay": {}}}')
    write(
        tmp_path,
        "c.yaml",
        "policy: p.json\ncases:\n  - {name: pays, tool: pay, expect: {action: allow}}\n"
        "  - {name: other, tool: other, expect: {action: allow}}\n",
    )
    done = cli("test", "c.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert not BOX & set(done.stdout)
    assert "\x1b[" not in done.stdout  # no colour codes either
    assert done.stdout.splitlines() == [
        "PASS  pays (step 1): expected allow; got allow",
        "FAIL  other (step 1): expected allow; got deny default_deny /default",
        "FAIL c.yaml: other (step 1): action: expected allow, got deny",
        "2 checks: 1 passed, 1 failed",
    ]


def test_on_a_terminal_test_draws_its_table(tmp_path: Path) -> None:
    write(tmp_path, "p.json", '{"version": "1", "default": "deny", "tools": {"pay": {}}}')
    cases = write(tmp_path, "c.yaml", "policy: p.json\ncases:\n  - {name: pays, tool: pay, expect: {action: allow}}\n")
    out = io.StringIO()
    assert print_results(run_file(cases), Console(file=out, force_terminal=True, width=100)) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colour codes aside
    assert BOX & set(text)
    assert "1 check: 1 passed, 0 failed" in text
