# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The OpenAI Agents SDK: a guarded MCP server
#
# The demo exchange server (`servers/exchange_server.py`) has read tools, trading tools, withdrawals and
# an API-key deletion. `guard_mcp_server` puts the example policy (`policies/exchange.json`) on the
# server object itself: the agent, the model and the server code do not change.
#
# Scripted model by default; with `OPENAI_API_KEY` set, the SDK's default OpenAI model decides the calls.


# %%
import json

from _scripted import EXCHANGE_POLICY, agent_kwargs, agents_model, exchange_stdio
from agents import Agent, RunContextWrapper, Runner
from agents.items import ToolCallItem, ToolCallOutputItem
from agents.mcp import MCPServerStdio

from mcp_guard import Guard, MemorySink, Policy
from mcp_guard.integrations.openai_agents import guard_mcp_server

policy = Policy.load(EXCHANGE_POLICY)
audit = MemorySink()
guard = Guard(policy, audit=audit)
server = guard_mcp_server(MCPServerStdio(params=exchange_stdio(), name="exchange", cache_tools_list=True), guard)
await server.connect()
print(policy.name, policy.hash)


# %% [markdown]
# ## What the model is shown
#
# The policy hides `delete_api_key`, so the server's tool list, as the agent sees it, leaves it out.


# %%
calls = [
    ("get_balance", {}),
    ("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
    ("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 2000}),
    ("withdraw", {"asset": "USD", "amount": 500, "address": "0x" + "ab" * 20}),
]
model, label = agents_model(calls, final="Bought 2,000 USD of BTC and withdrew 500 USD.")
agent = Agent(
    name="trader",
    instructions="You operate a crypto exchange account with the tools you have.",
    mcp_servers=[server],
    **agent_kwargs(model),
)
shown = [t.name for t in await agent.get_mcp_tools(RunContextWrapper(context=None))]
print(shown)


# %% tags=["remove-cell"]
SCRIPTED = label == "scripted"
assert "delete_api_key" not in shown
assert {"get_balance", "place_order", "withdraw"} <= set(shown)


# %% [markdown]
# ## A run
#
# Who is calling comes from the run context (`user_id`, `session_id`), so per-identity limits and
# `identity` conditions apply to the right person.


# %%
result = await Runner.run(
    agent,
    "Show my balance, buy 7,500 USD of BTC (or 2,000 if that is refused) and withdraw 500 USD to " + "0x" + "ab" * 20,
    context={"user_id": "alice", "session_id": "nb-02"},
)
await server.cleanup()

names = {}
outputs = []
for item in result.new_items:
    if isinstance(item, ToolCallItem):
        names[item.raw_item.call_id] = (item.raw_item.name, item.raw_item.arguments)
    elif isinstance(item, ToolCallOutputItem):
        call_id = item.raw_item["call_id"] if isinstance(item.raw_item, dict) else item.raw_item.call_id
        outputs.append((*names[call_id], str(item.output)))
print(f"model: {label}\n")
for name, args, output in outputs:
    print(f"{name:12} {args:70} -> {' '.join(output.split())[:90]}")
print("\nfinal answer:", result.final_output)


# %% [markdown]
# The refused order came back to the model as the tool's output (the SDK's `reject_content`), the JSON
# of a policy violation; the run went on and the next order went through.


# %%
def violation(text):
    return json.loads(text) if text.startswith('{"error": "policy_violation"') else None


refused = [violation(o) for _, _, o in outputs if violation(o)]
print(json.dumps(refused, indent=2))


# %% tags=["remove-cell"]
if SCRIPTED:
    assert [n for n, _, _ in outputs] == ["get_balance", "place_order", "place_order", "withdraw"]
    assert len(refused) == 1
    assert refused[0]["code"] == "denied"
    assert refused[0]["server"] == "exchange"
    assert refused[0]["rule"] == "/tools/place_order/deny_if/args.amount-gt"
    assert '"status":"open"' in outputs[2][2].replace(" ", "")
    assert "sent" in outputs[3][2]


# %% [markdown]
# ## The audit trail
#
# Each event carries the server name, the caller, the decision, the rule and the policy hash. The
# withdrawal's `address` is listed under the rule's `redact`, so not even its type and size are written.


# %%
for e in audit.events:
    print(e["server"], e["identity"], e["tool"], e["decision"], e["code"], e["rule"], e["args"])

withdrawals = [e for e in audit.events if e["tool"] == "withdraw"]


# %% tags=["remove-cell"]
assert all(e["server"] == "exchange" and e["identity"] == "alice" for e in audit.events)
assert all(e["policy"] == policy.hash for e in audit.events)
assert all(e["args"]["address"] == "[redacted]" for e in withdrawals)
if SCRIPTED:
    assert [e["decision"] for e in audit.events] == ["allow", "deny", "allow", "allow"]
