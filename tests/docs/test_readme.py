"""The README, followed as a newcomer would from a fresh clone: its install commands and its quick starts run.

Blocks to check are marked in README.md with an HTML comment on the line before the fence
(``<!-- test: NAME -->``), so the README cannot drift from the code without failing here. A fresh clone is a
temporary copy of the files git knows (tracked, or new and not ignored): no .venv, no audit log, no build output.

The quick starts run exactly as written, with no ``OPENAI_API_KEY`` (scripted models; CI is offline). One
substitution stands between the README and what runs: the ``git+https://github.com/<org>/mcp-guard`` URL (a
placeholder) becomes the fresh clone's own path.

The pip commands run with ``--dry-run --no-deps --no-index --no-build-isolation``: pip reads the project's
metadata and resolves the extras named, but downloads and installs nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PLACEHOLDER_URL = "git+https://github.com/<org>/mcp-guard"
MARKED = re.compile(r"<!-- test: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.DOTALL)


def marked_blocks() -> dict[str, str]:
    """Every marked fenced block of the README, by its marker name."""
    blocks: dict[str, str] = {}
    for name, _lang, body in MARKED.findall(README.read_text(encoding="utf-8")):
        assert name not in blocks, f"two README blocks are marked {name!r}"
        blocks[name] = body
    return blocks


BLOCKS = marked_blocks()
# The installed project is this checkout (pip install -e): its metadata names the extras pyproject.toml declares.
EXTRAS = set(metadata("mcp-guard").get_all("Provides-Extra") or [])


def pip_installs(block: str) -> list[list[str]]:
    """The arguments after ``pip install`` of each pip line in a shell block (comments dropped)."""
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["pip", "install"]:
            commands.append(words[2:])
    return commands


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    clone = tmp_path_factory.mktemp("clone") / "mcp-guard"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree but still in the index is not in a clone
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return clone


def test_the_readme_marks_its_install_commands_and_quick_starts() -> None:
    assert set(BLOCKS) == {"install-checkout", "install-url", "quickstart-langchain", "quickstart-openai-agents"}
    text = README.read_text(encoding="utf-8")
    # Outside a venv, a bare "python" is the system's, without mcp: the servers start with sys.executable.
    assert '"command": "python"' not in text
    # The two name clashes are named, and the placeholder is said to be one.
    assert "mcp-guardrails" in text
    assert "bonanza-mcp-guard" in text
    assert "`<org>` stands for" in text


PIP_DRY_RUN = ("--dry-run", "--no-deps", "--no-index", "--no-build-isolation")


def pip_dry_run(clone: Path, args: list[str]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", *PIP_DRY_RUN, "--quiet", "--report", "-", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"pip install {shlex.join(args)}: {run.stderr}"
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def requested(report: dict[str, Any]) -> tuple[str, set[str]]:
    [item] = report["install"]
    return item["metadata"]["name"], set(item.get("requested_extras") or [])


def test_install_from_a_checkout(fresh_clone: Path) -> None:
    commands = pip_installs(BLOCKS["install-checkout"])
    assert len(commands) >= 7
    named: set[str] = set()
    for args in commands:
        assert args[0] == "-e", args
        spec = args[1]
        extras = set(Requirement(f"mcp-guard{spec[1:]}").extras) if spec != "." else set()
        assert extras <= EXTRAS, f"{spec}: no such extra"
        named |= extras
    assert named == EXTRAS - {"dev"}, "every user-facing extra has its install line"
    # The core line and the everything line, through pip itself (the others differ only in the extra's name).
    for args in (commands[0], next(a for a in commands if a[1] == ".[all]")):
        name, extras = requested(pip_dry_run(fresh_clone, args))
        assert name == "mcp-guard"
        assert extras == set(Requirement(f"x{args[1][1:]}").extras)


def test_install_from_the_repository_url(fresh_clone: Path) -> None:
    commands = pip_installs(BLOCKS["install-url"])
    assert commands
    for [spec] in commands:
        requirement = Requirement(spec)
        assert requirement.name == "mcp-guard"
        assert requirement.url == PLACEHOLDER_URL
        assert set(requirement.extras) <= EXTRAS
        # The same requirement, pointed at the clone instead of the placeholder: pip accepts it, extras and all.
        name, extras = requested(pip_dry_run(fresh_clone, [spec.replace(PLACEHOLDER_URL, fresh_clone.as_uri())]))
        assert name == "mcp-guard"
        assert extras == set(requirement.extras)


Events = list[dict[str, Any]]


def run_snippet(
    clone: Path, code: str, stdin: str = "", env: dict[str, str] | None = None, expect_rc: int = 0
) -> tuple[subprocess.CompletedProcess[str], Events]:
    """Run ``code`` from the clone's top folder, as the README says, on this venv's Python; return the audit log."""
    audit = clone / "audit.jsonl"
    audit.unlink(missing_ok=True)
    script = clone / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PYTEST_CURRENT_TEST")}
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=clone,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        check=False,
    )
    assert run.returncode == expect_rc, run.stdout + run.stderr
    events = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()] if audit.exists() else []
    return run, events


def test_quick_start_langchain_runs_as_written_and_prints_the_refusal(fresh_clone: Path) -> None:
    run, events = run_snippet(fresh_clone, BLOCKS["quickstart-langchain"])
    # What the model was told (the tool's result, via the real MCP server's tool), as the snippet printed it.
    assert "The exchange said: " in run.stdout
    assert '"code": "denied"' in run.stdout
    assert "deny_if args.amount > 5000" in run.stdout  # the check that refused, not prose
    assert [(e["tool"], e["identity"], e["outcome"]) for e in events] == [("place_order", "alice", "denied")]


@pytest.mark.skipif(find_spec("langchain_openai") is not None, reason="langchain-openai is installed here")
def test_quick_start_langchain_with_a_key_but_no_model_package_says_what_to_do(fresh_clone: Path) -> None:
    # A key selects the hosted model; its package is missing: one line that says what to do, before any server
    # starts, not an exception group from inside the MCP session.
    run, events = run_snippet(
        fresh_clone, BLOCKS["quickstart-langchain"], env={"OPENAI_API_KEY": "sk-test-not-a-key"}, expect_rc=1
    )
    assert run.stderr.strip().splitlines() == [
        "Initializing ChatOpenAI requires the langchain-openai package. Please install it with "
        "`pip install langchain-openai` (or unset OPENAI_API_KEY to run the scripted model)"
    ]
    assert events == []


def test_quick_start_openai_agents_approved_withdrawal_reaches_the_server(fresh_clone: Path) -> None:
    run, events = run_snippet(fresh_clone, BLOCKS["quickstart-openai-agents"], stdin="y\n")
    assert "approve withdraw" in run.stdout  # the person was asked
    assert '"code": "denied", "tool": "place_order"' in run.stdout  # the order's refusal, printed
    assert "Done: see what each tool returned above." in run.stdout
    assert "skipping trace export" not in run.stderr  # tracing is off without a key: nowhere to send it
    assert [(e["tool"], e["outcome"]) for e in events] == [("place_order", "denied"), ("withdraw", "ok")]
    # outcome "ok" is written after the real server answered without an error
    assert events[1]["identity"] == "alice"
    assert '"status": "sent"' in run.stdout


def test_quick_start_openai_agents_declined_withdrawal_never_runs(fresh_clone: Path) -> None:
    run, events = run_snippet(fresh_clone, BLOCKS["quickstart-openai-agents"], stdin="n\n")
    assert "approve withdraw" in run.stdout
    assert '"code": "approval_denied"' in run.stdout
    assert "Done: see what each tool returned above." in run.stdout
    assert [(e["tool"], e["outcome"]) for e in events] == [("place_order", "denied"), ("withdraw", "denied")]
