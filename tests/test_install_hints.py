"""Every "install the extra" hint is a command that installs that extra into this same installation.

mcp-guard is not on an index, so ``pip install 'mcp-guard[yaml]'`` would install some other project (or
nothing). The hint must follow how the running copy was installed. Here a fresh clone is installed into fresh
virtual environments the three ways a newcomer does (``pip install -e .``, ``pip install .``, and from the git
URL), the CLI and the library are made to miss each extra, and the hints they print are handed back to pip.

The venvs borrow the dev venv's third-party packages (a ``.pth`` line to a folder of links to them, mcp-guard
itself left out) so that nothing is downloaded; pip then runs the printed command with ``--dry-run --no-index``:
it builds the clone's metadata, resolves the extras' requirements against what is installed, and reports what it
would install (the project, from where, with which extras) without touching the venv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from mcp_guard._install import install_hint, pip_command

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(sysconfig.get_paths()["purelib"])

# What the probe blocks, and the extra each blocked import should name: every place that prints a hint.
BLOCKED = (
    "yaml",
    "matplotlib",
    "mcp",
    "redis",
    "langchain",
    "langgraph",
    "agents",
    "watchfiles",
    "opentelemetry",
    "starlette",
    "uvicorn",
)


def test_the_hint_follows_the_install_record() -> None:
    # The PEP 610 records pip writes, one per way of installing (field names as in the spec).
    assert pip_command(None, "yaml") == "pip install 'mcp-guard[yaml]'"
    assert pip_command({"url": "file:///src/mcp-guard", "dir_info": {"editable": True}}, "yaml") == (
        "pip install -e '/src/mcp-guard[yaml]'"
    )
    assert pip_command({"url": "file:///src/mcp%20guard", "dir_info": {"editable": True}}, "plot") == (
        "pip install -e '/src/mcp guard[plot]'"
    )
    assert pip_command({"url": "file:///src/mcp-guard", "dir_info": {}}, "redis") == (
        "pip install 'mcp-guard[redis] @ file:///src/mcp-guard'"
    )
    vcs = {"url": "https://github.com/o/mcp-guard", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}
    assert pip_command(vcs, "proxy") == "pip install 'mcp-guard[proxy] @ git+https://github.com/o/mcp-guard@abc123'"
    archive = {"url": "https://example.org/mcp_guard-0.3.0-py3-none-any.whl", "archive_info": {}}
    assert pip_command(archive, "otel") == (
        "pip install 'mcp-guard[otel] @ https://example.org/mcp_guard-0.3.0-py3-none-any.whl'"
    )
    assert pip_command(Path("/src/mcp-guard"), "inbox") == "pip install -e '/src/mcp-guard[inbox]'"


def test_this_checkout_gets_the_editable_form() -> None:
    # The dev venv installs this checkout with `pip install -e '.[dev]'` (make install).
    assert install_hint("yaml") == f"pip install -e {shlex.quote(f'{ROOT}[yaml]')}"


# -- fresh venvs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone (a git repository, so that it can also be installed from a git URL)."""
    target = tmp_path_factory.mktemp("hint") / "mcp-guard"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "clone"], cwd=target, check=True)
    return target


@pytest.fixture(scope="module")
def borrowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Links to the dev venv's packages, without mcp-guard and without .pth files (no editable finder)."""
    folder = tmp_path_factory.mktemp("borrowed")
    for entry in SITE.iterdir():
        if entry.name.startswith(("mcp_guard", "__editable__", "mcp-guard")) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def fresh_venv(where: Path, borrowed: Path) -> Path:
    """A new venv (no pip of its own) that sees the borrowed packages; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "borrowed.pth").write_text(f"{borrowed}\n", encoding="utf-8")
    return python


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    run = subprocess.run(
        [str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert run.returncode == 0, f"pip {shlex.join(args)}:\n{run.stdout}\n{run.stderr}"
    return run


PROBE = textwrap.dedent(
    """
    import asyncio, contextlib, io, json, sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {{name}}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())

    from mcp_guard._cli.main import main

    work = sys.argv[1]
    open(f"{{work}}/p.yaml", "w").write("version: 1\\ndefault: deny\\n")
    open(f"{{work}}/p.json", "w").write('{{"version": "1", "default": "deny"}}')
    open(f"{{work}}/a.jsonl", "w").write('{{"tool": "t", "decision": "allow", "time": 1}}\\n')
    said = {{}}

    def cli(name, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        said[name] = (code, err.getvalue())

    cli("validate", ["validate", f"{{work}}/p.yaml"])
    cli("audit --plot", ["audit", f"{{work}}/a.jsonl", "--plot", f"{{work}}/x.png"])
    cli("proxy", ["proxy", "--policy", f"{{work}}/p.json", "--identity", "a", "--", sys.executable, "-c", "0"])
    cli("usage", ["usage", f"{{work}}/p.json", "--store", "redis://127.0.0.1:1/0"])

    def library(name, thunk):
        try:
            thunk()
        except ImportError as exc:
            said[name] = (None, str(exc))

    from mcp_guard import Guard, Inbox
    library("langchain", lambda: __import__("mcp_guard.integrations.langchain"))
    library("openai-agents", lambda: __import__("mcp_guard.integrations.openai_agents"))
    library("reload", lambda: Guard(f"{{work}}/p.json", reload=True))
    library("otel", lambda: Guard(f"{{work}}/p.json", metrics=True))
    from mcp_guard._inbox.web import create_app
    library("inbox", lambda: create_app(Inbox("memory://"), token="t" * 20))
    print(json.dumps(said))
    """
)

# What each probe must name: the extra that brings the blocked module.
EXPECTED = {
    "validate": "yaml",
    "audit --plot": "plot",
    "proxy": "proxy",
    "usage": "redis",
    "langchain": "langchain",
    "openai-agents": "openai-agents",
    "reload": "reload",
    "otel": "otel",
    "inbox": "inbox",
}
HINT = re.compile(r"(pip install (?:-e )?(?:'[^']*'|\S+))")


def hints_printed(python: Path, work: Path) -> dict[str, str]:
    """Run the probe in the venv: every hint printed, by what printed it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [str(python), "-c", PROBE.format(blocked=BLOCKED), str(work)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    said: dict[str, Any] = json.loads(run.stdout)
    assert set(said) == set(EXPECTED), said
    hints = {}
    for name, (code, text) in said.items():
        assert code in (None, 2), (name, code, text)  # the CLI: exit 2, a missing extra
        assert "Traceback" not in text
        assert len(text.strip().splitlines()) == 1, text  # one line
        found = HINT.findall(text)
        assert len(found) == 1, text
        hints[name] = found[0]
    return hints


def extras_of(args: list[str]) -> tuple[str, set[str]]:
    """(where, extras) of ``pip install`` arguments: ``-e PATH[x]`` or ``NAME[x] @ URL``."""
    if args[0] == "-e":
        where, _, extras = args[1].partition("[")
        return where, set(extras.rstrip("]").split(","))
    [spec] = args
    requirement = Requirement(spec)
    assert requirement.name == "mcp-guard"
    return str(requirement.url), set(requirement.extras)


@pytest.mark.parametrize("how", ["editable", "folder", "git"])
def test_each_printed_hint_installs_what_it_names(how: str, clone: Path, borrowed: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv", borrowed)
    source = {"editable": ["-e", str(clone)], "folder": [str(clone)], "git": [f"git+{clone.as_uri()}"]}[how]
    pip(python, "install", "--no-build-isolation", "--no-deps", "--quiet", *source)
    work = tmp_path / "work"
    work.mkdir()

    hints = hints_printed(python, work)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True)
    where_expected = {
        "editable": str(clone),
        "folder": clone.as_uri(),
        "git": f"git+{clone.as_uri()}@{commit.stdout.strip()}",
    }[how]
    all_args: list[str] = []
    for name, hint in hints.items():
        words = shlex.split(hint)
        assert words[:2] == ["pip", "install"], hint
        where, extras = extras_of(words[2:])
        assert (where, extras) == (where_expected, {EXPECTED[name]}), (name, hint)
        all_args += words[2:]

    # pip itself, given every hint at once (one resolve): the project from the same place, every extra named,
    # each extra's requirements satisfiable (--no-index: only what is installed can satisfy them). From a git URL
    # at the installed commit pip finds everything already satisfied and would install nothing; --no-deps
    # --force-reinstall makes it report the project it resolved the hint to.
    again = ["--no-deps", "--force-reinstall"] if how == "git" else []
    dry = ["--dry-run", "--no-index", "--no-build-isolation", "--quiet", "--report", "-", *again]
    run = pip(python, "install", *dry, *all_args)
    [item] = json.loads(run.stdout)["install"]
    assert item["metadata"]["name"] == "mcp-guard"
    assert set(item["requested_extras"]) == set(EXPECTED.values())
    info = item["download_info"]
    if how == "editable":
        assert (info["url"], info["dir_info"]) == (clone.as_uri(), {"editable": True})
    elif how == "folder":
        assert info["url"] == clone.as_uri()
    else:
        assert (info["url"], info["vcs_info"]["commit_id"]) == (clone.as_uri(), commit.stdout.strip())
    # Each extra named brings what the probe lacked (the metadata's own requirement for it).
    requires = [Requirement(r) for r in item["metadata"]["requires_dist"]]
    for extra in EXPECTED.values():
        assert any(r.marker is not None and r.marker.evaluate({"extra": extra}) for r in requires), extra


def test_one_version_everywhere() -> None:
    # pyproject.toml reads the version from _version.py; the metadata pip wrote and the CLI say the same.
    from importlib.metadata import version

    import mcp_guard

    assert 'version = { attr = "mcp_guard._version.__version__" }' in (ROOT / "pyproject.toml").read_text()
    assert version("mcp-guard") == mcp_guard.__version__ == "0.3.0.dev0"
    run = subprocess.run(
        [sys.executable, "-m", "mcp_guard", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "mcp-guard 0.3.0.dev0"
