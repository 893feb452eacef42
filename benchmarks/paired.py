"""Before vs after, paired in one run: each benchmark against two versions of ``src``, rounds alternating.

Run::

    python benchmarks/paired.py --before 880776b [--after WORKTREE_OR_REV] [--rounds 4] [--quick] [bench ...]

BEFORE is a git revision: its ``src`` is materialised with ``git archive REV src | tar -x`` into a temporary
folder. AFTER is a worktree (its ``src``), or a revision (archived the same way); by default the ``src`` of
the tree this script sits in. Both sides run the benchmark scripts of THIS tree (so both are measured by the
same instrument) with this interpreter, the side's ``src`` first on ``PYTHONPATH`` (checked: the run stops if
``import mcp_guard`` would load anything else). The scripts use only what both versions have.

Each round runs every benchmark once per side, before then after in even rounds and after then before in
odd ones (so an even number of rounds gives each side each position equally often), so a busy spell on the
machine (other processes, CPU frequency) hits both sides alike. Printed per figure: the median over the
rounds of each side, the ratio after / before of those medians, the median of the per-round ratios (each
round's two runs ran back to back) and their range (how much the machine's noise moves one round's
verdict). Run it with the same source on both sides (``--after`` the same revision) to see the noise floor
of the machine: the ratios then scatter around 1.0 by exactly that much.

Benchmarks (default: all): decision, runtime, guard_overhead, langchain_overhead, agents_overhead,
pipeline_cost, proxy_overhead (real proxy processes, which inherit each side's ``PYTHONPATH``). ``--quick`` /
``--smoke`` are passed on to each script. Not a timed test: it checks nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = (
    "decision",
    "runtime",
    "guard_overhead",
    "langchain_overhead",
    "agents_overhead",
    "pipeline_cost",
    "proxy_overhead",
)


@dataclass
class Side:
    name: str
    label: str  # what was measured: a revision, or a worktree's HEAD and whether it has changes
    src: Path
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def archive(rev: str, into: Path) -> Path:
    """``git archive REV src | tar -x -C into``: the revision's ``src``, without touching any checkout."""
    into.mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-x", "-C", str(into)], stdin=subprocess.PIPE)
    assert tar.stdin is not None
    subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, stdout=tar.stdin)
    tar.stdin.close()
    if tar.wait() != 0:
        raise SystemExit(f"could not unpack src of {rev}")
    return into / "src"


def side_of(name: str, spec: str | None, tmp: Path) -> Side:
    """A revision (archived) or a worktree folder (its ``src`` as it is, uncommitted changes included)."""
    if spec is None:
        spec = str(ROOT)
    folder = Path(spec)
    if folder.is_dir():
        src = folder / "src" if (folder / "src" / "mcp_guard").is_dir() else folder
        if not (src / "mcp_guard").is_dir():
            raise SystemExit(f"{spec}: no src/mcp_guard there")
        try:
            dirty = git("status", "--porcelain", "--", "src", cwd=folder)
            label = f"{folder} at {git('rev-parse', '--short', 'HEAD', cwd=folder)}"
            label += " + uncommitted changes in src" if dirty else ""
        except (subprocess.CalledProcessError, OSError):
            label = str(folder)
        return Side(name, label, src.resolve())
    try:
        sha = git("rev-parse", "--short", f"{spec}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{spec!r} is neither a folder nor a revision of {ROOT}") from None
    return Side(name, f"revision {sha} ({spec})", archive(spec, tmp / name))


def env_for(side: Side) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(side.src)  # first on sys.path: ahead of the venv's editable install
    env.pop("PYTHONSTARTUP", None)
    return env


def check_import(side: Side) -> None:
    code = "import mcp_guard; print(mcp_guard.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env_for(side), capture_output=True, text=True)
    loaded = Path(out.stdout.strip() or "?").resolve()
    if out.returncode != 0 or side.src not in loaded.parents:
        raise SystemExit(f"{side.name}: import mcp_guard loads {loaded}, not from {side.src}\n{out.stderr}")


def run_once(side: Side, bench: str, flags: list[str]) -> None:
    cmd = [sys.executable, str(HERE / f"{bench}.py"), "--json", *flags]
    done = subprocess.run(cmd, env=env_for(side), capture_output=True, text=True, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    try:
        if done.returncode != 0 or not lines:
            raise ValueError(f"exit {done.returncode}")
        figures = {str(k): float(v) for k, v in json.loads(lines[-1]).items()}
    except ValueError as exc:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        side.failures.setdefault(bench, []).append(f"{exc}: {tail}")
        return
    side.runs.setdefault(bench, []).append(figures)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    names = {name for run in runs for name in run}
    return {name: statistics.median(run[name] for run in runs if name in run) for name in names}


def report(bench: str, before: Side, after: Side) -> dict[str, dict[str, float]]:
    """Print one benchmark's table; return its figures (name -> before, after, ratio, lo, hi)."""
    b_runs, a_runs = before.runs.get(bench, []), after.runs.get(bench, [])
    print(f"\n== {bench}  ({len(b_runs)} runs before, {len(a_runs)} after)")
    for side in (before, after):
        for failure in side.failures.get(bench, []):
            print(f"   {side.name} run failed: {failure}")
    if not b_runs or not a_runs:
        print("   no figures to pair")
        return {}
    b_med, a_med = medians(b_runs), medians(a_runs)
    names = sorted(set(b_med) | set(a_med))
    width = max(40, *(len(n) for n in names))
    head = f"{'before':>11} {'after':>11} {'after/before':>13} {'paired':>8} {'per-round range':>16}"
    print(f"   {'figure (µs)':<{width}} {head}")
    result: dict[str, dict[str, float]] = {}
    for name in names:
        if name not in b_med or name not in a_med:
            only = "before" if name in b_med else "after"
            value = b_med.get(name, a_med.get(name, math.nan))
            print(f"   {name:<{width}} {'':>11} {'':>11} {'':>13}   only {only}: {value:.2f}")
            continue
        # Round i's ratio pairs the i-th run of each side: they ran next to each other.
        per_round = [a[name] / b[name] for b, a in zip(b_runs, a_runs, strict=False) if name in a and name in b]
        ratio = a_med[name] / b_med[name]
        lo, hi, paired = min(per_round), max(per_round), statistics.median(per_round)
        cells = f"{b_med[name]:>11.2f} {a_med[name]:>11.2f} {ratio:>12.3f}x {paired:>7.3f}x {lo:>8.2f}-{hi:.2f}x"
        print(f"   {name:<{width}} {cells}")
        result[name] = {
            "before": b_med[name],
            "after": a_med[name],
            "ratio": ratio,
            "paired": paired,
            "lo": lo,
            "hi": hi,
        }
    ratios = [f["ratio"] for f in result.values() if f["ratio"] > 0]
    if ratios:
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
        print(f"   {'geometric mean of the ratios':<{width}} {'':>11} {'':>11} {geo:>12.3f}x")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", required=True, help="a git revision (e.g. 880776b)")
    parser.add_argument("--after", help="a worktree folder or a revision (default: this tree's src)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of before/after runs (default 4; keep it even)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to each benchmark (tests only)")
    parser.add_argument("--json", action="store_true", help="also print every paired figure as one JSON object")
    parser.add_argument("benches", nargs="*", metavar="bench", help=f"any of {', '.join(BENCHES)} (default all)")
    opts = parser.parse_args()
    unknown = [b for b in opts.benches if b.removesuffix(".py") not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {', '.join(BENCHES)}")
    benches = [b.removesuffix(".py") for b in opts.benches] or list(BENCHES)
    flags = ["--quick"] * opts.quick + ["--smoke"] * opts.smoke
    with tempfile.TemporaryDirectory(prefix="mcp-guard-paired-") as tmp:
        before = side_of("before", opts.before, Path(tmp))
        after = side_of("after", opts.after, Path(tmp))
        for side in (before, after):
            check_import(side)
        print(f"before: {before.label}\n        {before.src}")
        print(f"after:  {after.label}\n        {after.src}")
        print(f"{opts.rounds} rounds, sides alternating; python {sys.version.split()[0]}; flags {flags or 'none'}")
        started = time.monotonic()
        for i in range(opts.rounds):
            for bench in benches:
                for side in (before, after) if i % 2 == 0 else (after, before):
                    run_once(side, bench, flags)
            print(f"  round {i + 1}/{opts.rounds} done at {time.monotonic() - started:.0f} s", file=sys.stderr)
    results = {bench: report(bench, before, after) for bench in benches}
    print("\nafter/before = after median / before median over the rounds (< 1: after is faster); paired = median")
    print("of the per-round ratios; the per-round range shows the machine's noise (same source on both sides:")
    print("the ratios scatter around 1.0 by that much).")
    if opts.json:
        print(json.dumps({"before": before.label, "after": after.label, "figures": results}, sort_keys=True))


if __name__ == "__main__":
    main()
