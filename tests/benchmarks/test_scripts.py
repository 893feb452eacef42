"""The benchmark scripts run, and their ``--json`` figures carry the names ``paired.py`` pairs, all positive.

Each script runs once with ``--smoke --json`` (tiny sizes: the figures mean nothing, only that the
instrument works), all of them at once so the module costs the slowest script, not their sum. No timing
is asserted: figures depend on the machine.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

REDIS_FIGURES = {"evaluate + Redis reserve", "Guard.admit + finish, Redis", "raw Redis round trip (redis-py PING)"}
CASES = (
    "allow",
    "deny (default)",
    "deny_if firing",
    "limit, admitted",
    "limit, refused",
    "approval (sync callback)",
    "approval (async callback)",
    "approval (sync, no timeout)",
)
GRANT_FIGURES = {f"grants memory: {v}" for v in ("no grants", "lookup misses", "grant covers the call")}

# script -> (extra arguments, figure names its JSON must have)
EXPECTED: dict[str, tuple[list[str], set[str]]] = {
    "decision": (
        [],
        {
            "exact allow, 10 rules",
            "glob allow, 10 rules",
            "deny_if numeric, 10 rules",
            "args_schema, 10 rules",
            "grant-scoped limit, 10 rules",
            "deny_if firing, 10 rules",
            "default_deny, 10 rules",
            "calibration: no-op call",
        },
    ),
    "runtime": ([], {"Policy.evaluate alone", "evaluate + memory reserve", "Guard.admit + finish, memory"}),
    "guard_overhead": (
        [],
        {"direct await tool(**args)", "ainvoke, allow, no limits, no audit", "invoke, allow, no limits, no audit"},
    ),
    "langchain_overhead": (
        [],
        {
            "Guard.arun alone, allow rule",
            "plain StructuredTool, allow rule: unguarded",
            "plain StructuredTool, allow rule: guarded",
            "MCP tool (stdio session), allow rule: unguarded",
            "MCP tool (stdio session), allow rule: guarded",
        },
    ),
    "agents_overhead": ([], {"unguarded run", "guarded run", "guardrail + wrapper alone, per call"}),
    "proxy_overhead": (
        [],
        {"stdio: direct", "stdio: relay", "stdio: --no-relay", "http: direct", "http: proxy"},
    ),
    "session_cost": (
        [],
        {
            "deny_if numeric (no session)",
            "from [user, trusted], 5 KB memory",
            "no_secrets, 20 secrets, 2 KB body",
            "result scan: detect secrets, 5 KB",
            "result scan: detect pii, 5 KB",
            "Guard.run, deny_if, memory store",
            "Guard.run, from [user], 5 KB memory store",
            "no session rules, memory: no session",
            "no session rules, memory: session with memory",
        },
    ),
    # A path that is no interpreter: the peer figure is reported as not measured, and the rest still runs.
    "pipeline_cost": (
        ["--agt-python", str(ROOT / "no-such-python")],
        {f"{case}: {column}" for case in CASES for column in ("bare", "admit+finish", "run", "arun")} | GRANT_FIGURES,
    ),
}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def ran() -> dict[str, Ran]:
    """Every script started at once with ``--smoke --json``; their outputs once all have ended."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--json", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (extra, _) in EXPECTED.items()
    }
    out: dict[str, Ran] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = Ran(proc.returncode, stdout, stderr)
    return out


def figures_of(result: Ran) -> dict[str, float]:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be the JSON line alone (the table goes to stderr): {result.stdout!r}"
    figures = json.loads(lines[0])
    assert isinstance(figures, dict)
    return figures


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_script_prints_its_figures_as_json(ran: dict[str, Ran], name: str) -> None:
    figures = figures_of(ran[name])
    missing = EXPECTED[name][1] - set(figures)
    assert not missing, f"{name} --json lacks {sorted(missing)}; it has {sorted(figures)}"
    bad = {k: v for k, v in figures.items() if not (isinstance(v, float | int) and math.isfinite(v) and v > 0)}
    assert not bad, f"{name}: figures must be positive µs: {bad}"
    assert ran[name].stderr.strip(), "the table is still printed (to stderr under --json)"


def test_runtime_measures_redis_when_there_is_a_server(ran: dict[str, Ran]) -> None:
    figures = figures_of(ran["runtime"])
    if shutil.which("redis-server") is None:
        assert "Redis rows skipped" in ran["runtime"].stderr
        if os.environ.get("MCP_GUARD_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and MCP_GUARD_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed: runtime.py skips its Redis rows")
    assert set(figures) >= REDIS_FIGURES, sorted(figures)


def test_pipeline_cost_says_when_the_peer_was_not_measured(ran: dict[str, Ran]) -> None:
    assert "AGT not measured" in ran["pipeline_cost"].stderr
    assert not any(name.startswith("AGT") for name in figures_of(ran["pipeline_cost"]))


def test_paired_runs_both_sides_and_pairs_every_figure(tmp_path: Path) -> None:
    """Same source on both sides (HEAD archived vs this tree): every figure appears with a ratio."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("paired.py archives a revision: needs a git checkout")
    args = ["--before", "HEAD", "--rounds", "1", "--smoke", "--json", "pipeline_cost"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "paired.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["before"].startswith("revision ")
    paired = summary["figures"]["pipeline_cost"]
    assert EXPECTED["pipeline_cost"][1] <= set(paired)
    for figure in paired.values():
        assert figure["before"] > 0
        assert figure["after"] > 0
        assert figure["ratio"] == pytest.approx(figure["after"] / figure["before"])
