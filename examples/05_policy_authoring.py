# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing a policy: validate, explain, classes, and reading the audit log
#
# A policy is a small JSON or YAML file. This notebook goes through the loop of writing one:
#
# 1. `mcp-guard validate` (a policy that does not validate never loads; errors name the field path);
# 2. `mcp-guard explain` (what one call would get, and why);
# 3. risk classes from MCP annotations, and `mcp-guard init` to start from a server's own tools;
# 4. the audit log read back, with a plot of decisions over time.
#
# The commands run here through `subprocess`; in a terminal, type them as shown.


# %%
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mcp_guard import Guard, Policy

# Files this notebook writes go here, beside it (git-ignored); the last cell removes the folder.
WORK = Path("_work_05")
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir()


def mcp_guard(*args: str) -> subprocess.CompletedProcess:
    """Run `mcp-guard ARGS...` with this kernel's Python and show what it printed."""
    print("$ mcp-guard", " ".join("python" if a == sys.executable else a for a in args))
    run = subprocess.run(
        [sys.executable, "-m", "mcp_guard._cli.main", *args], capture_output=True, text=True, timeout=60
    )
    print(run.stdout + run.stderr)
    return run


# %% [markdown]
# ## 1. Validate
#
# The JSON and YAML versions of the example policy are the same policy: same content, same hash.


# %%
json_run = mcp_guard("validate", "policies/exchange.json")
yaml_run = mcp_guard("validate", "policies/exchange.yaml")


# %% tags=["remove-cell"]
assert json_run.returncode == 0
assert yaml_run.returncode == 0
assert Policy.load("policies/exchange.json").hash == Policy.load("policies/exchange.yaml").hash


# %% [markdown]
# A policy with mistakes is refused as a whole, with every problem at its JSON path, what was wrong and
# what is allowed. Unknown fields are errors too: a typo never silently switches a rule off.


# %%
broken = {
    "version": "1",
    "default": "deny",
    "tools": {
        "place_order": {
            "deny_if": {"args.amount": {"greater_than": 5000}},
            "limits": [{"counter": "spend", "window": "fortnight", "max": 10000}],
            "reson": "typo",
        }
    },
}
(WORK / "broken.json").write_text(json.dumps(broken))
run = mcp_guard("validate", str(WORK / "broken.json"))


# %% tags=["remove-cell"]
assert run.returncode != 0
for path in ("deny_if/args.amount", "limits/0/window", "reson"):
    assert f"/tools/place_order/{path}" in run.stdout + run.stderr, path


# %% [markdown]
# ## 2. Explain one call
#
# `explain` evaluates a call without running anything: the decision, the rule pointer, the reason, and
# every limit the call would be charged (shown, not counted).


# %%
ADDRESS = "0x" + "ab" * 20
mcp_guard(
    "explain",
    "policies/exchange.json",
    "--tool",
    "withdraw",
    "--identity",
    "alice",
    "--args",
    json.dumps({"asset": "BTC", "amount": 0.1, "address": ADDRESS}),
)
run = mcp_guard(
    "explain",
    "policies/exchange.json",
    "--tool",
    "place_order",
    "--identity",
    "alice",
    "--json",
    "--args",
    json.dumps({"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
)
explained = json.loads(run.stdout)


# %% tags=["remove-cell"]
assert (explained["action"], explained["code"]) == ("deny", "denied")
assert explained["rule"] == "/tools/place_order/deny_if/args.amount-gt"
assert explained["payload"]["error"] == "policy_violation"  # exactly what the model would receive


# %% [markdown]
# ## 3. Risk classes from MCP annotations
#
# MCP servers describe their tools with hints: `readOnlyHint`, `destructiveHint`, `openWorldHint`.
# The policy's `classes` turn them into rules for tools no name pattern matches, with MCP's defaults for
# hints left out (a tool is assumed destructive and open-world unless it says otherwise). A tool with no
# annotations at all has no class: `default` decides. Here are the notes server's tools under a policy
# made only of classes.


# %%
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

notes_server = StdioServerParameters(command=sys.executable, args=["servers/notes_server.py"])
async with stdio_client(notes_server) as (r, w), ClientSession(r, w) as session:
    await session.initialize()
    listed = (await session.list_tools()).tools

by_class = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "classes": {
            "read": {},
            "write": {"rate_limit": "30/minute"},
            "open_world": {"rate_limit": "10/minute"},
            "destructive": {"action": "require_approval"},
        },
    }
)
seen = {}
for t in listed:
    hints = t.annotations.model_dump(exclude_none=True) if t.annotations else {}
    d = by_class.evaluate(t.name, {}, annotations=hints)
    seen[t.name] = (d.risk_class, d.action, d.rule)
    print(f"{t.name:12} {hints!s:75} -> {d.risk_class!s:11} {d.action:17} {d.rule}")


# %% tags=["remove-cell"]
assert seen["list_notes"] == ("read", "allow", "/classes/read")
assert seen["add_note"][:2] == ("open_world", "allow")  # destructiveHint false, openWorldHint unset
assert seen["delete_note"][:2] == ("destructive", "require_approval")
assert seen["search_web"] == (None, "deny", "/default")  # no annotations: no class


# %% [markdown]
# `mcp-guard init` does this for you: it starts a server, reads its tools and annotations, and writes a
# starter policy (default deny; read-only tools allowed; writes rate-limited; destructive tools, and
# tools that say nothing, held for a person), with a `description` on every rule saying why.


# %%
starter = WORK / "notes-policy.json"
run = mcp_guard("init", "--output", str(starter), "--", sys.executable, "servers/notes_server.py")
print(starter.read_text()[:1200], "...")
rules = json.loads(starter.read_text())["tools"]


# %% tags=["remove-cell"]
assert run.returncode == 0
assert mcp_guard("validate", str(starter)).returncode == 0
assert rules["search_web"]["action"] == "require_approval"


# %% [markdown]
# ## 4. The audit log, read back
#
# A simulated morning of an over-eager trading agent: 300 calls over ten minutes, through a guard with
# the example policy and a JSONL audit file. The clock is simulated so the notebook runs in a second.


# %%
class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


clock = Clock()
audit_path = WORK / "audit.jsonl"
guard = Guard(Policy.load("policies/exchange.json"), clock=clock, audit=audit_path)
rng = random.Random(7)
for i in range(300):
    clock.now += 2.0
    roll = rng.random()
    if roll < 0.35:
        tool, args = "get_ticker", {"symbol": "BTCUSD"}
    elif roll < 0.75:
        tool, args = "create_listen_key", {}
    else:
        tool, args = "place_order", {"symbol": "ETHUSD", "side": "buy", "amount": rng.choice([500, 1500, 6000])}
    guard.invoke(tool, args, lambda **kw: "ok", identity="alice", session=f"s{i // 60}")
guard.close()

events = [json.loads(line) for line in audit_path.read_text().splitlines()]
outcomes = Counter(e["code"] or "allowed" for e in events)
print(audit_path)
print(json.dumps(events[0], indent=2))
print(outcomes)


# %% tags=["remove-cell"]
assert len(events) == 300
assert all(outcomes[kind] > 0 for kind in ("allowed", "denied", "rate_limited"))
assert set(outcomes) <= {"allowed", "denied", "rate_limited"}


# %%
# %matplotlib inline
from datetime import datetime

import matplotlib.pyplot as plt

# Audit times are ISO-8601 UTC strings.
seconds = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in events]
minutes = sorted({int((t - seconds[0]) // 60) for t in seconds})
kinds = ["allowed", "denied", "rate_limited"]
counts = {k: [0] * len(minutes) for k in kinds}
for e, t in zip(events, seconds, strict=True):
    counts[e["code"] or "allowed"][int((t - seconds[0]) // 60)] += 1

fig, ax = plt.subplots(figsize=(8, 3.5))
bottom = [0] * len(minutes)
for kind, color in zip(kinds, ["tab:green", "tab:red", "tab:orange"], strict=True):
    ax.bar(minutes, counts[kind], bottom=bottom, label=kind, color=color)
    bottom = [b + c for b, c in zip(bottom, counts[kind], strict=True)]
ax.set_xlabel("minute")
ax.set_ylabel("calls")
ax.set_title("Decisions over time")
ax.legend()
plt.show()


# %% tags=["remove-cell"]
assert sum(bottom) == 300
assert len(ax.patches) == 3 * len(minutes)  # the bars drawn: one per decision kind per minute
# create_listen_key is capped at 30 a minute: after the first minutes' burst, refusals appear.
assert sum(counts["rate_limited"]) == outcomes["rate_limited"]


# %% [markdown]
# That is all: the files this notebook wrote (a broken policy, a starter policy, the audit log) go with it.


# %%
shutil.rmtree(WORK)
