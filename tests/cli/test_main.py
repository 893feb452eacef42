"""The ``mcp-guard`` CLI: validate, explain, schema (through ``main([...])``, and once as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Policy
from mcp_guard._cli.main import SUBCOMMANDS, build_parser, main
from mcp_guard._install import install_hint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"
BINANCE = [
    ("binance_us.json", "binance_us_create_listen_key", "binance_us_create_listen_key_rate", 30),
    ("binance_futures.json", "BinanceFuturesCreateListenKey", "BinanceFuturesCreateListenKey_rate", 10),
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, data: Any, name: str = "policy.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize(("file", "tool", "counter", "max_"), BINANCE)
def test_explain_policylayer_named_tool(
    capsys: pytest.CaptureFixture[str], file: str, tool: str, counter: str, max_: int
) -> None:
    code, out, _ = run(capsys, "explain", str(EXAMPLES / file), "--tool", tool, "--identity", "grant-7", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["action"] == "allow"
    assert info["code"] is None
    assert info["rule"] == f"/tools/{tool}"
    assert info["limits"] == [
        {
            "counter": counter,
            "scope": "grant",
            "scope_key": "grant-7",
            "max": max_,
            "window_s": 60.0,
            "cost": 1,
            "count_failures": False,
            "rule": f"/tools/{tool}/limits/0",
        }
    ]
    assert info["policy"] == Policy.load(EXAMPLES / file).hash


@pytest.mark.parametrize(("file", "tool", "counter", "max_"), BINANCE)
def test_explain_policylayer_other_tool(
    capsys: pytest.CaptureFixture[str], file: str, tool: str, counter: str, max_: int
) -> None:
    code, out, _ = run(capsys, "explain", str(EXAMPLES / file), "--tool", tool.upper() + "_x", "--json")
    assert code == 3  # refused (issue 10: explain's exit status says the verdict)
    info = json.loads(out)
    assert (info["action"], info["code"], info["rule"], info["limits"]) == ("deny", "default_deny", "/default", [])
    assert info["payload"]["code"] == "default_deny"


def test_explain_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", str(EXAMPLES / "binance_us.json"), "--tool", "binance_us_create_listen_key")
    assert code == 0
    assert "decision:  allow" in out
    assert "rule:      /tools/binance_us_create_listen_key" in out
    assert "counter 'binance_us_create_listen_key_rate', scope grant (key 'anonymous'): 30 calls per minute" in out
    assert "this call costs 1" in out
    code, out, _ = run(capsys, "explain", str(EXAMPLES / "binance_us.json"), "--tool", "withdraw")
    assert "decision:  deny (default_deny)" in out
    assert "reason:    no rule allows withdraw (default: deny)" in out
    assert '"hint"' in out


def test_explain_all_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        {
            "version": "1",
            "default": "deny",
            "classes": {"read": {"description": "reads are fine"}},
            "tools": {
                "gh/pay": {
                    "description": "payments",
                    "deny_if": {"args.amount": {"gt": 100}},
                    "limits": [
                        {"counter": "spend", "window": "day", "max": 500, "cost": "args.amount", "scope": "session"}
                    ],
                }
            },
        },
    )
    code, out, _ = run(
        capsys,
        "explain",
        path,
        "--tool",
        "pay",
        "--server",
        "gh",
        "--args",
        '{"amount": 40}',
        "--session",
        "s9",
        "--json",
    )
    info = json.loads(out)
    assert (code, info["action"], info["description"]) == (0, "allow", "payments")
    assert info["limits"][0] | {"rule": None} == {
        "counter": "spend",
        "scope": "session",
        "scope_key": "s9",
        "max": 500,
        "window_s": 86400.0,
        "cost": 40,
        "count_failures": False,
        "rule": None,
    }
    code, out, _ = run(capsys, "explain", path, "--tool", "pay", "--server", "gh", "--args", '{"amount": 400}')
    assert "decision:  deny (denied)" in out
    assert "/tools/gh~1pay/deny_if/args.amount-gt" in out
    code, out, _ = run(capsys, "explain", path, "--tool", "get", "--annotations", '{"readOnlyHint": true}', "--json")
    info = json.loads(out)
    assert (info["rule"], info["risk_class"], info["description"]) == ("/classes/read", "read", "reads are fine")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--args", "{not json"], "--args is not valid JSON"),
        (["--annotations", "[1]"], "--annotations must be a JSON object"),
    ],
)
def test_explain_bad_input(capsys: pytest.CaptureFixture[str], extra: list[str], words: str) -> None:
    code, _, err = run(capsys, "explain", str(EXAMPLES / "binance_us.json"), "--tool", "x", *extra)
    assert code == 2
    assert words in err


def test_explain_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", write(tmp_path, {"version": "1"}), "--tool", "x")
    assert (code, out) == (1, "")
    assert "/default: required field 'default' is missing" in err


def test_validate_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(EXAMPLES / "binance_futures.json"))
    assert code == 0
    assert "valid" in out
    assert Policy.load(EXAMPLES / "binance_futures.json").hash in out
    assert err == ""


def test_validate_invalid_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        {
            "version": "1",
            "default": "deny",
            "tools": {"x": {"acton": "deny", "limits": [{"window": "hour ", "max": -1}]}},
        },
    )
    code, out, err = run(capsys, "validate", path)
    assert (code, out) == (1, "")
    assert (
        "/tools/x/acton: unknown field 'acton' (did you mean 'action'?); allowed fields: action, reason, on_deny" in err
    )
    assert "/tools/x/limits/0/window: 'hour ' is not a window" in err
    assert "/tools/x/limits/0/max: -1 is not a valid max" in err


def test_validate_duplicate_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '{"version": "1", "default": "deny", "tools": {"a": {}, "a": {"action": "deny"}}}')
    code, _, err = run(capsys, "validate", path)
    assert code == 1
    assert "/tools/a: duplicate key 'a'" in err


def test_validate_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "version: 1\ndefault: allow\nhide: [x]\n", "p.yaml")
    code, out, _ = run(capsys, "validate", path)
    assert code == 0
    assert "default allow" in out


@pytest.mark.parametrize(
    ("data", "warned"),
    [
        ({"hide": ["x"], "tools": {"x": {}}}, "/tools/x: never applies"),
        ({"hide": ["*"], "tools": {"git_*": {}}}, "/tools/git_*: never applies"),
        ({"hide": ["git_*"], "tools": {"git_*": {}}}, "/tools/git_*: never applies"),
        ({"hide": ["git_*"], "tools": {"git_log": {}}}, "/tools/git_log: never applies"),
        ({"hide": ["x"], "tools": {"s/x": {}}}, "/tools/s~1x: never applies"),
        ({"hide": ["s/*"], "tools": {"s/x": {}}}, "/tools/s~1x: never applies"),
        ({"tools": {"*": {}}, "classes": {"read": {}}}, "/classes: never applies"),
        (
            {"tools": {"x": {"limits": [{"window": 1, "max": 0}]}}},
            "/tools/x/limits/0/max: max is 0, so this limit refuses every call",
        ),
    ],
)
def test_validate_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], warned: str
) -> None:
    path = write(tmp_path, {"version": "1", "default": "deny", **data})
    code, _, err = run(capsys, "validate", path)
    assert code == 0
    # One line per warning, FILE:LINE:COLUMN: /pointer: message (the form editors and pre-commit read).
    assert err.startswith(f"warning: {path}:1:")
    assert f": {warned}" in err


@pytest.mark.parametrize(
    "data",
    [
        {"hide": ["s/x"], "tools": {"x": {}}},  # the rule still applies on other servers
        {"hide": ["git_log"], "tools": {"git_*": {}}},  # the glob still matches git_push
        {"hide": ["a*"], "tools": {"b*": {}}},
    ],
)
def test_validate_no_false_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any]) -> None:
    code, _, err = run(capsys, "validate", write(tmp_path, {"version": "1", "default": "deny", **data}))
    assert (code, err) == (0, "")


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert json.loads(out) == Policy.json_schema()
    assert set(json.loads(out)["required"]) == {"version", "default"}


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["explain", str(EXAMPLES / "binance_us.json")])  # --tool missing
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_parser_registry() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"validate", "explain", "schema", "init"} <= set(sub.choices)  # type: ignore[arg-type]
    assert len(SUBCOMMANDS) == len(sub.choices)  # type: ignore[arg-type]


def test_console_script_in_a_real_process() -> None:
    exe = Path(sys.executable).parent / "mcp-guard"
    assert exe.exists(), exe
    for file, tool, counter, max_ in BINANCE:
        proc = subprocess.run(
            [str(exe), "explain", str(EXAMPLES / file), "--tool", tool, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert (info["action"], info["limits"][0]["counter"], info["limits"][0]["max"]) == ("allow", counter, max_)
    proc = subprocess.run(
        [str(exe), "explain", str(EXAMPLES / "binance_us.json"), "--tool", "other"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3  # refused
    assert "deny (default_deny)" in proc.stdout


def test_cli_without_extras(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ndefault: deny\n", "p.yaml")
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('yaml', 'mcp', 'langchain', 'agents', 'redis'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mcp_guard._cli.main import main\n"
        f"assert main(['validate', {str(EXAMPLES / 'binance_us.json')!r}]) == 0\n"
        f"sys.exit(main(['validate', {path!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert install_hint("yaml") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly() -> None:
    # `mcp-guard schema | head -1`: the pipe closes early; no BrokenPipeError traceback on stderr.
    import fcntl

    exe = Path(sys.executable).parent / "mcp-guard"
    read_fd, write_fd = os.pipe()
    # A one-page pipe: the ~13 KB schema cannot fit, so the writer is still writing when the reader leaves.
    fcntl.fcntl(read_fd, 1031, 4096)  # F_SETPIPE_SZ
    proc = subprocess.Popen([str(exe), "schema"], stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"{"
    os.close(read_fd)  # the reader leaves, as head does
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 141
    assert b"Traceback" not in stderr, stderr.decode()


def test_validate_counts_read_as_english(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "1", "default": "deny", "hide": ["x"], "tools": {"a": {}, "b": {}}}))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 tool rules, 1 hidden pattern, 0 class rules" in out
