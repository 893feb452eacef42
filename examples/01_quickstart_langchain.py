# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quick start: one policy around a LangChain agent's tools
#
# A payments assistant has three tools: read a price, send a payment, drop a database. We do not want it
# to drop databases, send more than 100 USD at once, or send more than three payments a minute.
# `wrap_tools` puts a policy around the tools; the agent and the model stay as they are.
#
# The model here is scripted (it makes a fixed list of calls) so the outputs can be checked. With
# `OPENAI_API_KEY` set and `langchain-openai` installed, a real model chooses the calls instead.


# %%
import json

from _scripted import langchain_model, tool_call
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from mcp_guard import Guard, MemorySink, Policy
from mcp_guard.integrations.langchain import wrap_tools


@tool
def get_price(symbol: str) -> float:
    """Last price of a symbol such as BTCUSD."""
    return {"BTCUSD": 64000.0, "ETHUSD": 3200.0}[symbol]


@tool
def send_payment(to: str, amount: int) -> str:
    """Send `amount` US dollars to `to`."""
    return f"sent {amount} USD to {to}"


@tool
def drop_database(name: str) -> str:
    """Delete a database. Cannot be undone."""
    return f"dropped {name}"


# %% [markdown]
# ## The policy
#
# Default deny: a tool with no rule cannot be called. `drop_database` is hidden: the model is never shown
# it. `send_payment` is allowed under two conditions: `deny_if` refuses amounts over 100, and
# `rate_limit` allows three calls a minute per caller identity (here `alice`).


# %%
policy = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "hide": ["drop_database"],
        "tools": {
            "get_price": {},
            "send_payment": {
                "deny_if": {"args.amount": {"gt": 100}},
                # For people reading the policy; the model is told which check refused its call.
                "description": "Payments over 100 USD need a person, not an agent.",
                "rate_limit": "3/minute",
            },
        },
    }
)
audit = MemorySink()  # keeps audit events in a list; use audit="audit.jsonl" for a file
guard = Guard(policy, audit=audit)
tools = wrap_tools([get_price, send_payment, drop_database], guard, identity="alice")

print("the model is shown:", [t.name for t in tools])


# %% tags=["remove-cell"]
assert [t.name for t in tools] == ["get_price", "send_payment"]


# %% [markdown]
# ## The agent
#
# The script asks for a price, then six payments. Watch what comes back for each.


# %%
script = [
    tool_call("get_price", {"symbol": "BTCUSD"}),
    tool_call("send_payment", {"to": "bob", "amount": 50}),
    tool_call("send_payment", {"to": "mallory", "amount": 5000}),
    tool_call("send_payment", {"to": "carol", "amount": 20}),
    tool_call("send_payment", {"to": "dave", "amount": 10}),
    tool_call("send_payment", {"to": "erin", "amount": 10}),
    "Paid bob, carol and dave. The 5,000 USD payment and the payment to erin were refused.",
]
model, label = langchain_model(script)
agent = create_agent(model, tools)
result = agent.invoke(
    {
        "messages": [
            {
                "role": "user",
                "content": "Check the BTC price, then pay bob 50, mallory 5000, carol 20, dave 10 and erin 10 "
                "USD, one payment at a time.",
            }
        ]
    }
)
replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
print(f"model: {label}\n")
for m in replies:
    print(f"{m.name:13} {m.status:8} {m.content[:110]}")


# %% tags=["remove-cell"]
SCRIPTED = label == "scripted"


# %% [markdown]
# Refused calls did not raise and did not end the run: each came back to the model as an error
# `ToolMessage` whose text is a small JSON object, with a `code`, the `rule` that decided, a `reason`,
# and a `hint` telling the model what to do next.


# %%
refusals = [json.loads(m.content) for m in replies if m.status == "error"]
print(json.dumps(refusals[-1], indent=2))


# %% tags=["remove-cell"]
assert all(r["error"] == "policy_violation" for r in refusals)
assert all(m.name != "drop_database" for m in replies)
if SCRIPTED:
    assert [m.status for m in replies] == ["success", "success", "error", "success", "success", "error"]
    denied, limited = refusals
    assert denied["code"] == "denied"
    assert denied["rule"] == "/tools/send_payment/deny_if/args.amount-gt"
    assert denied["reason"] == "deny_if args.amount > 100"
    # The refused 5,000 USD payment used no quota: bob, carol and dave are the three of this minute.
    assert limited["code"] == "rate_limited"
    assert 0 < limited["retry_after_s"] <= 60


# %% [markdown]
# ## The audit log
#
# One event per call, whatever happened. Argument values are never written in clear: each is described
# by its type and size (plus an HMAC fingerprint when the deployment sets `audit_key`), or reads
# `[redacted]` for paths a rule lists under `redact`, so the log can be shared.


# %%
for e in audit.events:
    print(f"{e['tool']:13} {e['decision']:6} {e['code']!s:13} {e['outcome']:7} {e['args']}")


# %% tags=["remove-cell"]
assert len(audit.events) == len(replies)
assert all("type" in v for e in audit.events for v in e["args"].values())
if SCRIPTED:
    assert [e["code"] for e in audit.events] == [None, None, "denied", None, None, "rate_limited"]
