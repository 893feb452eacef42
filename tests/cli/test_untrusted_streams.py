"""The other untrusted streams the CLI reads (spec section 10): policy files, case files, ``explain --args``.

Found beside the audit log and case files: an integer of more than 4,300 digits (Python's conversion limit) in
a policy or case file, or in ``explain --args``, ended ``validate``, ``explain`` and ``test`` with an internal
error (exit 70), and ``Policy.load`` raised a bare ``ValueError``: each is now bad input (exit 2, one line, no
traceback). ``explain`` admitted arguments holding NaN or Infinity when no rule read them, which a Guard
refuses before any rule: it now says what the Guard does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Policy, PolicyError
from mcp_guard._cli.main import main
from mcp_guard._policy.model import PolicyInputError

HUGE = "9" * 5000
POLICY = {"version": "1", "default": "allow", "tools": {"pay": {"deny_if": {"args.amount": {"gt": 100}}}}}


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert "internal error" not in err
    return err


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ('{"amount": ' + HUGE + "}", "is not valid JSON: Exceeds the limit (4300 digits)"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_explain_args_that_cannot_be_read_are_bad_input(tmp_path: Path, capsys: Any, given: str, says: str) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps(POLICY))
    assert main(["explain", str(policy), "--tool", "pay", "--args", given]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("mcp-guard explain: --args")
    assert says in err


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ('{"amount": NaN}', "args.amount"),
        ('{"amount": 1e400}', "args.amount"),
        ('{"note": "x", "a": {"b": [1, -Infinity]}}', "args.a.b[1]"),
    ],
)
def test_explain_refuses_non_finite_arguments_as_a_guard_does(
    tmp_path: Path, capsys: Any, given: str, path: str
) -> None:
    # A rule that reads no argument: Policy.evaluate alone would admit the call; a Guard refuses it before any
    # rule (invalid_arguments), and explain must say what the Guard does.
    from mcp_guard import Guard

    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "tools": {"note": {"action": "allow"}}}))
    assert main(["explain", str(policy), "--tool", "note", "--args", given, "--json"]) == 3
    info = json.loads(capsys.readouterr().out)
    assert (info["action"], info["code"]) == ("deny", "invalid_arguments")
    assert path in info["reason"]
    ran: list[Any] = []
    result = Guard(str(policy)).invoke("note", json.loads(given), lambda **kw: ran.append(kw) or "ok")
    assert (ran, result["code"]) == ([], "invalid_arguments")


def huge_policy(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"huge{suffix}"
    if suffix == ".json":
        limit = '{"window": "minute", "max": ' + HUGE + "}"
        path.write_text('{"version": "1", "default": "allow", "tools": {"t": {"limits": [' + limit + "]}}}")
    else:
        path.write_text(
            f'version: "1"\ndefault: allow\ntools:\n  t:\n    limits:\n      - {{window: minute, max: {HUGE}}}\n'
        )
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_policy_with_a_5000_digit_number_is_bad_input(tmp_path: Path, capsys: Any, suffix: str) -> None:
    path = huge_policy(tmp_path, suffix)
    with pytest.raises(PolicyInputError, match="number too long to read"):
        Policy.load(path)
    assert issubclass(PolicyInputError, PolicyError)  # what library callers (Guard, reload) already catch
    for argv in (["validate", str(path)], ["explain", str(path), "--tool", "t"]):
        assert main(argv) == 2, argv
        assert "number too long to read" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_case_file_with_a_5000_digit_number_is_bad_input(tmp_path: Path, capsys: Any, suffix: str) -> None:
    (tmp_path / "p.json").write_text(json.dumps(POLICY))
    path = tmp_path / f"cases{suffix}"
    if suffix == ".json":
        case = '{"name": "x", "tool": "pay", "args": {"amount": ' + HUGE + '}, "expect": {"action": "allow"}}'
        path.write_text('{"policy": "p.json", "cases": [' + case + "]}")
    else:
        path.write_text(f"policy: p.json\ncases:\n  - {{name: x, tool: pay, args: {{amount: {HUGE}}}, expect: {{}}}}\n")
    assert main(["test", str(path)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"cannot read {path}: the file holds a number too long to read" in err


def test_case_file_read_errors_speak_of_the_case_file(tmp_path: Path, capsys: Any) -> None:
    for name, text, says in (
        ("empty.yaml", "\n", "the file is empty; it needs 'cases'"),
        ("deep.yaml", "cases: " + "[" * 100, "the file is nested more than 64 levels deep"),
    ):
        (tmp_path / name).write_text(text)
        assert main(["test", str(tmp_path / name)]) == 2
        err = one_line(capsys.readouterr().err)
        assert says in err
        assert "policy" not in err


def test_validate_max_bytes_is_bounded(tmp_path: Path, capsys: Any) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps(POLICY))
    for bad in ("0", "-1", str(10**15), "5MB"):
        with pytest.raises(SystemExit) as exc:  # argparse's usage error, before any file is read
            main(["validate", "--max-bytes", bad, str(policy)])
        assert exc.value.code == 2
        assert "argument --max-bytes: a number of bytes from 1 to" in capsys.readouterr().err
    assert main(["validate", "--max-bytes", "100000", str(policy)]) == 0
