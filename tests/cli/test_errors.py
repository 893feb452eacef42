"""CLI hardening and ergonomics (issues 9 and 10): every bad-input path exits 2 and an invalid policy 1, each
with exactly one line on stderr and never a traceback; ``validate`` takes several files and speaks JSON with
line and column; ``explain``'s exit status says the verdict; ``python -m mcp_guard`` works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_guard._cli.main import main
from mcp_guard._policy.decision import LimitCharge

GOOD = {"version": "1", "default": "deny", "tools": {"read": {}, "pay": {"deny_if": {"args.amount": {"gt": 100}}}}}


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    return lines[0]


def _deep_json(depth: int) -> str:
    return '{"version": "1", "default": "deny", "description": ' + "[" * depth + "]" * depth + "}"


INPUT_ERRORS = [
    ("missing_file", lambda p: str(p / "nope.json"), "cannot read the file"),
    ("directory", lambda p: str(_dir(p)), "cannot read the file"),
    ("unknown_suffix", lambda p: write(p, "p.txt", GOOD), "unknown policy file type '.txt'"),
    ("not_utf8", lambda p: write(p, "p.json", b'{"version": "1", "default": "d\xff"}'), "not UTF-8"),
    ("deep_json", lambda p: write(p, "p.json", _deep_json(100_000)), "nested more than 64 levels"),
    ("deep_yaml", lambda p: write(p, "p.yaml", "a: " + "[" * 2_000), "nested more than 64 levels"),
]


def _dir(p: Path) -> Path:
    d = p / "adir.json"
    d.mkdir()
    return d


@pytest.mark.parametrize(("make", "words"), [(m, w) for _, m, w in INPUT_ERRORS], ids=[i for i, _, _ in INPUT_ERRORS])
@pytest.mark.parametrize("command", ["validate", "explain"])
def test_input_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, words: str, command: str
) -> None:
    path = make(tmp_path)
    argv = ["validate", path] if command == "validate" else ["explain", path, "--tool", "read"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert words in one_line(err)
    assert out.strip() in ("", "[]")


def test_too_large_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "--max-bytes", "10", write(tmp_path, "p.json", GOOD))
    assert code == 2
    assert "over the limit of 10" in one_line(err)


INVALID = [
    ("missing_default", {"version": "1"}, "/default: required field 'default' is missing"),
    ("malformed_json", '{"version": "1",', "malformed JSON"),
    ("alias", 'version: "1"\ndefault: &d deny\n', "anchors and aliases are not allowed"),
    ("regex", {**GOOD, "tools": {"x": {"require": {"args.a": {"regex": "(a)\\1"}}}}}, "invalid regular expression"),
    ("two_slashes", {**GOOD, "tools": {"a/b/c": {}}}, "can be read two ways"),
]


@pytest.mark.parametrize(("data", "words"), [(d, w) for _, d, w in INVALID], ids=[i for i, _, _ in INVALID])
@pytest.mark.parametrize("command", ["validate", "explain"])
def test_invalid_policy_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any, words: str, command: str
) -> None:
    path = write(tmp_path, "p.yaml" if isinstance(data, str) and "default: &d" in data else "p.json", data)
    argv = ["validate", path] if command == "validate" else ["explain", path, "--tool", "read"]
    code, out, err = run(capsys, *argv)
    assert code == 1
    line = one_line(err)
    assert words in line
    assert line.startswith(path + ":")
    assert out == ""


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--args", "{not json"], "--args is not valid JSON"),
        (["--args", "[1, 2]"], "--args must be a JSON object"),
        (["--args", '"text"'], "--args must be a JSON object"),
        (["--args", "[" * 100_000 + "]" * 100_000], "nested too deeply"),
        (["--annotations", "[1]"], "--annotations must be a JSON object"),
    ],
)
def test_explain_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    code, out, err = run(capsys, "explain", write(tmp_path, "p.json", GOOD), "--tool", "pay", *extra)
    assert code == 2
    assert words in one_line(err)
    assert out == ""


def test_explain_exit_status_says_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.json", {**GOOD, "tools": {**GOOD["tools"], "rm": {"action": "require_approval"}}})
    assert run(capsys, "explain", path, "--tool", "read")[0] == 0
    assert run(capsys, "explain", path, "--tool", "pay", "--args", '{"amount": 5}')[0] == 0
    assert run(capsys, "explain", path, "--tool", "pay", "--args", '{"amount": 500}')[0] == 3
    assert run(capsys, "explain", path, "--tool", "other")[0] == 3
    assert run(capsys, "explain", path, "--tool", "pay", "--args", '{"amount": NaN}')[0] == 3
    code, out, _ = run(capsys, "explain", path, "--tool", "rm", "--json")
    assert (code, json.loads(out)["action"]) == (4, "require_approval")


def test_validate_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", GOOD)
    b = write(tmp_path, "b.yaml", 'version: "1"\ndefault: allow\n')
    bad = write(tmp_path, "bad.json", {"version": "1", "default": "maybe"})
    code, out, err = run(capsys, "validate", a, b)
    assert (code, err) == (0, "")
    assert out.count(": valid;") == 2
    code, out, err = run(capsys, "validate", a, bad, b)
    assert code == 1
    assert out.count(": valid;") == 2
    assert one_line(err).startswith(f"{bad}:1:")
    # An unreadable file among them makes the run a usage error (2), after reporting the rest.
    code, out, err = run(capsys, "validate", a, str(tmp_path / "gone.json"), bad)
    assert code == 2
    assert out.count(": valid;") == 1
    assert len(err.strip().split("\n")) == 2


def test_validate_json_format_gives_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        '{\n  "version": "1",\n  "default": "deny",\n  "tools": {\n'
        '    "x": {"limits": [{"window": 60, "max": -1}]}\n  }\n}\n'
    )
    j = write(tmp_path, "p.json", text)
    y = write(tmp_path, "p.yaml", 'version: "1"\ndefault: deny\ntools:\n  x:\n    acton: deny\n    hide: 3\n')
    code, out, _ = run(capsys, "validate", "--format", "json", j, y)
    assert code == 1
    problems = json.loads(out)
    by_path = {(p["file"], p["path"]): p for p in problems}
    limit = by_path[(j, "/tools/x/limits/0/max")]
    assert (limit["line"], limit["column"]) == (5, 37)  # the "max" key
    assert limit["severity"] == "error"
    assert "-1 is not a valid max" in limit["message"]
    acton = by_path[(y, "/tools/x/acton")]
    assert (acton["line"], acton["column"]) == (5, 5)
    assert set(acton) == {"file", "line", "column", "path", "message", "severity"}
    # Malformed text: the parser's own position; a missing field: its parent.
    bad = write(tmp_path, "m.json", '{"version": "1",\n "default": }')
    missing = write(tmp_path, "n.json", '{\n"version": "1"}')
    code, out, _ = run(capsys, "validate", "--format", "json", bad, missing)
    (malformed, absent) = json.loads(out)
    assert (malformed["line"], malformed["column"]) == (2, 13)
    assert (absent["path"], absent["line"], absent["column"]) == ("/default", 1, 1)


def test_validate_json_format_lists_warnings_and_nothing_when_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = write(tmp_path, "c.json", GOOD)
    code, out, _ = run(capsys, "validate", "--format", "json", clean)
    assert (code, json.loads(out)) == (0, [])
    warned = write(tmp_path, "w.json", {"version": "1", "default": "deny", "hide": ["x"], "tools": {"x": {}}})
    code, out, _ = run(capsys, "validate", "--format", "json", warned)
    (warning,) = json.loads(out)
    assert (code, warning["severity"], warning["path"], warning["line"]) == (0, "warning", "/tools/x", 1)


def test_schema_key_in_a_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.json", {"$schema": "./policy.schema.json", **GOOD})
    assert run(capsys, "validate", path)[0] == 0


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", GOOD)
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_guard", "explain", path, "--tool", "other"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "decision:  deny (default_deny)" in proc.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "mcp_guard", "explain", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "3 explain: the call would be refused" in " ".join(helped.stdout.split())


@pytest.mark.parametrize(
    ("max_", "cost", "text"),
    [(1, 1, "limited to 1 call per minute"), (2, 1, "limited to 2 calls per minute"), (1, 5, "1 unit per minute")],
)
def test_limit_wording(max_: int, cost: int, text: str) -> None:
    assert text in LimitCharge("c", "grant", "a", 60.0, max_, cost, "/r").describe("t")


def test_terminal_output_uses_tables_and_colour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a terminal, explain prints rich tables; names from the policy are never read as markup.
    from rich.console import Console

    from mcp_guard._cli import main as _cli

    consoles: list[Console] = []

    def fake_console(stream: Any) -> Console:
        # As _cli._console builds it, but forced on: captured output is not a terminal.
        console = Console(file=stream, highlight=False, soft_wrap=True, force_terminal=True, color_system="truecolor")
        consoles.append(console)
        return console

    monkeypatch.setattr(_cli, "_console", fake_console)
    data = {
        "version": "1",
        "default": "deny",
        "tools": {"[b]x": {"limits": [{"counter": "[red]c", "window": 60, "max": 1}]}},
    }
    path = write(tmp_path, "p.json", data)
    code, out, _ = run(capsys, "explain", path, "--tool", "[b]x")
    assert code == 0
    assert "\x1b[" in out  # colour
    assert "[red]c" in out  # literal, not markup
    assert "1 per minute" in out
    code, out, _ = run(capsys, "explain", path, "--tool", "other")
    assert code == 3
    assert "default_deny" in out
    assert "the model sees:" in out
    code, _, err = run(capsys, "validate", write(tmp_path, "bad.json", {"version": "1"}))
    assert code == 1
    assert "required field 'default' is missing" in err
