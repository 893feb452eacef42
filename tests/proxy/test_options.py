"""``mcp-guard proxy`` options: bad input exits 2 with one line, a policy that does not validate 1.

In-process through ``main()``; none of these gets as far as serving a client.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_guard._cli.main import main
from mcp_guard._proxy.http import identity_reader

GOOD = {"version": "1", "default": "allow"}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(GOOD))
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "either -- CMD ARGS... or --upstream URL"),
        (["--upstream", "http://127.0.0.1:1/mcp", "--", "python3"], "either -- CMD ARGS... or --upstream URL"),
        (["--identity-header", "X-User", "--", "python3"], "need --listen"),
        (["--listen", "127.0.0.1:9", "--identity", "a", "--identity-header", "X", "--", "python3"], "give one of"),
        (["--listen", "127.0.0.1:9", "--identity-header", "X", "--tokens", "t.json", "--", "python3"], "--tokens goes"),
        (["--listen", "nowhere", "--", "python3"], "--listen must be HOST:PORT"),
        (["--approval-timeout", "0", "--", "python3"], "--approval-timeout must be > 0"),
        (["--store", "nosuch://x", "--", "python3"], "nosuch"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    policy: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", "--policy", str(policy), *options]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_an_invalid_policy_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "1", "default": "maybe"}))
    assert main(["proxy", "--policy", str(bad), "--", "python3"]) == 1
    assert "default" in capsys.readouterr().err


def test_an_upstream_command_that_does_not_exist_exits_2(
    policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-server")
    assert main(["proxy", "--policy", str(policy), "--", missing]) == 2
    assert capsys.readouterr().err == f"mcp-guard proxy: the upstream command {missing!r} was not found\n"


def test_bearer_identity_is_a_fingerprint_or_the_mapped_name() -> None:
    with pytest.raises(ValueError, match="check the token"):
        identity_reader("bearer")
    anonymous = identity_reader("bearer", trust_any=True)
    fingerprint = anonymous({"authorization": "Bearer s3cret"})
    assert fingerprint is not None
    assert fingerprint.startswith("bearer:")
    assert "s3cret" not in fingerprint
    assert anonymous({"authorization": "Basic s3cret"}) is None
    assert anonymous({}) is None
    mapped = identity_reader("bearer", tokens={"s3cret": "alice"})
    assert mapped({"authorization": "Bearer s3cret"}) == "alice"
    assert mapped({"authorization": "Bearer other"}) is None
    header = identity_reader("header", header="X-User")
    assert header({"x-user": " bob "}) == "bob"
    assert header({"x-user": ""}) is None
