# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Rate limits and back-off
#
# Three things a rate limit must do for an agent:
#
# 1. tell the **model** when it may try again (`retry_after_s`), instead of failing the run;
# 2. optionally **wait** for the window to free, for code that would rather block than re-plan;
# 3. hold across **every worker**: two processes share one budget through Redis.
#
# Windows are sliding: in no interval of a window's length are more than `max` calls admitted, so there
# is no double burst at a boundary. The first two parts use an injected clock, so the numbers are exact.


# %%
import atexit
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

from _scripted import langchain_model, tool_call
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from mcp_guard import Guard, Policy
from mcp_guard.integrations.langchain import wrap_tools


class Clock:
    """A clock the guard reads instead of time.time(): the notebook moves it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@tool
def create_listen_key() -> str:
    """Open a user-data stream and return its listen key."""
    return "listen-key-" + str(time.perf_counter_ns())[-6:]


policy = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "create_listen_key": {
                "limits": [{"counter": "listen_keys", "window": "minute", "max": 3, "scope": "identity"}]
            }
        },
    }
)


# %% [markdown]
# ## 1. The model receives `retry_after_s`
#
# Three listen keys a minute per identity. The fourth call comes back as a `rate_limited` violation that
# says when to try again; the last step of this scripted model reads it, as a real model would.


# %%
clock = Clock()
guard = Guard(policy, clock=clock)


def read_the_refusal(messages):
    refusal = json.loads(messages[-1].content)
    return f"I hit {refusal['rule']}; I will try again in {refusal['retry_after_s']:g} s."


model, label = langchain_model([tool_call("create_listen_key") for _ in range(4)] + [read_the_refusal])
agent = create_agent(model, wrap_tools([create_listen_key], guard, identity="alice"))
result = agent.invoke({"messages": [{"role": "user", "content": "Open four user-data streams, one by one."}]})
replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
for m in replies:
    print(m.status, m.content[:120])
print("\nthe model says:", result["messages"][-1].content)


# %% tags=["remove-cell"]
SCRIPTED = label == "scripted"
if SCRIPTED:
    assert [m.status for m in replies] == ["success"] * 3 + ["error"]
    refusal = json.loads(replies[-1].content)
    assert refusal["code"] == "rate_limited"
    assert refusal["retry_after_s"] == 60  # all three calls were at the same instant of the fake clock
    assert result["messages"][-1].content.endswith("try again in 60 s.")


# %%
# The window slides: 60 s later alice has her budget back; bob never shared it.
def noop() -> str:
    return "ok"


print("bob now:", guard.invoke("create_listen_key", {}, noop, identity="bob"))
clock.now += 60
print("alice, 60 s later:", guard.invoke("create_listen_key", {}, noop, identity="alice"))


# %% tags=["remove-cell"]
assert guard.invoke("create_listen_key", {}, noop, identity="bob") == "ok"
assert guard.invoke("create_listen_key", {}, noop, identity="alice") == "ok"


# %% [markdown]
# ## 2. The wait mode
#
# `on_rate_limit="wait"` sleeps until the window has room and tries again, at most `max_wait_s` in all;
# a wait longer than that is not started, and the violation comes back at once. Here the guard sleeps
# on the fake clock too (`sleep=`), so the minute passes instantly; by default it really sleeps.


# %%
clock = Clock()
slept = []


def fake_sleep(seconds: float) -> None:
    slept.append(seconds)
    clock.now += seconds


waiting = Guard(policy, clock=clock, sleep=fake_sleep, on_rate_limit="wait", max_wait_s=90)
keys = [waiting.invoke("create_listen_key", {}, noop, identity="alice") for _ in range(5)]
print(keys)
print("slept:", slept)


# %% tags=["remove-cell"]
assert keys == ["ok"] * 5
assert slept == [60]  # call 4 waits for the first minute to slide past; call 5 then fits too


# %% [markdown]
# A guard that may wait at most 10 s does not start a 60 s wait: the refusal comes back at once.


# %%
impatient = Guard(policy, clock=clock, sleep=fake_sleep, on_rate_limit="wait", max_wait_s=10)
for _ in range(3):
    impatient.invoke("create_listen_key", {}, noop, identity="carol")
slept.clear()
refused = impatient.invoke("create_listen_key", {}, noop, identity="carol")
print(refused["code"], refused["retry_after_s"], "slept:", slept)


# %% tags=["remove-cell"]
assert refused["code"] == "rate_limited"
assert slept == []  # a 60 s wait is longer than max_wait_s=10: no pointless sleeping


# %% [markdown]
# ## 3. One budget for every worker: Redis
#
# Two worker processes (`_rate_worker.py`) each try 8 calls under a limit of 5 a minute for everyone
# (`scope: global`). With a `redis://` store they share one budget, and exactly 5 calls get in, however
# the two interleave: each decision is one atomic Lua script on the server.
#
# If `redis-server` (or the `redis` package) is not installed, this falls back to the `memory://` store,
# which is shared only inside one process: the two workers then run as two threads of this kernel.


# %%
from _rate_worker import new_guard, run_calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


redis_server = shutil.which("redis-server")
try:
    import redis
except ImportError:
    redis = None

server_proc = None
if redis_server and redis is not None:
    port = free_port()
    server_proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    atexit.register(server_proc.kill)  # never leave a redis-server behind, even if a cell fails
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    STORE = f"redis://127.0.0.1:{port}/0"
    print(f"redis-server found: two worker processes share {STORE}")
else:
    STORE = "memory://"
    print("no redis-server here: falling back to memory://, two worker threads sharing one Guard")


# %%
if STORE.startswith("redis://"):
    workers = [
        subprocess.Popen([sys.executable, "_rate_worker.py", STORE, name, "8"], stdout=subprocess.PIPE, text=True)
        for name in ("worker-a", "worker-b")
    ]
    reports = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
else:
    shared = new_guard(STORE)
    reports = []
    threads = [
        threading.Thread(target=lambda n=name: reports.append(run_calls(shared, n, 8)))
        for name in ("worker-a", "worker-b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

for r in sorted(reports, key=lambda r: -r["admitted"]):  # whichever worker came first got the budget
    print(r)
total = sum(r["admitted"] for r in reports)
print("admitted in total:", total)


# %% tags=["remove-cell"]
assert total == 5
assert sum(r["refused"].get("rate_limited", 0) for r in reports) == 11


# %%
if server_proc is not None:
    server_proc.terminate()
    server_proc.wait(timeout=10)
