# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Human approval, three ways
#
# The example policy (`policies/exchange.json`) lets small USD withdrawals through and holds the rest
# for a person: `approve_if` fires when the amount is over 1,000 or the asset is not USD. How the person
# is asked depends on where the agent runs:
#
# 1. **a callback**: any function (sync or async) that gets an `ApprovalRequest` and answers;
# 2. **a LangGraph interrupt**: the graph pauses, your application asks, `Command(resume=...)` continues;
# 3. **the Agents SDK's approvals**: the run stops with `result.interruptions`, you `approve` or `reject`.
#
# In every case a person can approve, decline (the model is told, and told not to retry), or approve
# with edited arguments, which are checked against the policy again.


# %%
import json

from _scripted import EXCHANGE_POLICY, agent_kwargs, agents_model, exchange_stdio, langchain_model, tool_call

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, Policy

policy = Policy.load(EXCHANGE_POLICY)
ADDRESS = "0x" + "ab" * 20


def withdraw(asset: str, amount: float, address: str) -> str:
    """Send `amount` of `asset` to an external `address`."""
    return f"sent {amount:g} {asset} to {address[:10]}…"


# %% [markdown]
# ## 1. A callback
#
# The approver sees everything a person needs: the tool, the arguments, who asks, the rule that asked
# for approval and why. This one stands in for a person who allows USD up to 3,000, trims larger USD
# withdrawals to 3,000, and keeps crypto on the exchange.


# %%
asked: list[ApprovalRequest] = []


def approver(request: ApprovalRequest) -> bool | ApprovalDecision:
    asked.append(request)
    if request.args["asset"] != "USD":
        return ApprovalDecision.deny("crypto stays on the exchange")
    if request.args["amount"] > 3000:
        return ApprovalDecision.edit({**request.args, "amount": 3000})
    return True


guard = Guard(policy, approver=approver)
results = [
    guard.invoke("withdraw", {"asset": asset, "amount": amount, "address": ADDRESS}, withdraw, identity="alice")
    for asset, amount in [("USD", 500), ("USD", 2500), ("USD", 8000), ("BTC", 0.1)]
]
for r in results:
    print(r)

first = asked[0]
print("\nthe approver was asked:", first.tool, first.args["amount"], first.identity, first.rule)
print("with:", first.description)


# %% tags=["remove-cell"]
assert len(asked) == 3  # 500 USD needed nobody
assert results[0] == "sent 500 USD to 0xabababab…"
assert results[1] == "sent 2500 USD to 0xabababab…"
assert results[2] == "sent 3000 USD to 0xabababab…"  # the edit, checked again and run
assert results[3]["code"] == "approval_denied"
assert results[3]["reason"] == "crypto stays on the exchange"
assert first.rule == "/tools/withdraw/approve_if/args.amount-gt"


# %% [markdown]
# ## 2. A LangGraph interrupt
#
# With `GuardMiddleware(approval="interrupt")`, a call that needs a person pauses the graph (it needs a
# checkpointer and a `thread_id`). Nothing is counted against rate limits before the answer. The
# application shows the pending call, then resumes with `Command(resume=...)`: `{"type": "approve"}`,
# `{"type": "reject", "message": ...}`, `{"type": "edit", "args": {...}}`, or plain `True` / `False`.


# %%
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool as as_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from mcp_guard.integrations.langchain import GuardMiddleware

script = [
    tool_call("withdraw", {"asset": "USD", "amount": 2500, "address": ADDRESS}),
    "Withdrew what you approved.",
    tool_call("withdraw", {"asset": "ETH", "amount": 1, "address": ADDRESS}),
    "The withdrawal was declined.",
]
model, label = langchain_model(script)
agent = create_agent(
    model,
    [as_tool(withdraw)],
    middleware=[GuardMiddleware(policy, approval="interrupt", identity="alice")],
    checkpointer=InMemorySaver(),
)

config = {"configurable": {"thread_id": "approval-1"}}
result = agent.invoke({"messages": [{"role": "user", "content": f"Withdraw 2,500 USD to {ADDRESS}"}]}, config)
pending = result["__interrupt__"][0].value if result.get("__interrupt__") else None
print(json.dumps(pending, indent=2))


# %% tags=["remove-cell"]
SCRIPTED = label == "scripted"
if pending is not None:
    assert pending["type"] == "tool_approval"
    assert pending["name"] == "withdraw"
    assert pending["mcp_guard"]["rule"].startswith("/tools/withdraw/approve_if/")


# %%
if pending is not None:
    # The person approves, but only 1,000 USD: an edit. The edited call is checked again, then runs.
    edited = {**pending["args"], "amount": 1000}
    # LangChain's HumanInTheLoop decision shape: {"type": "edit", "edited_action": {"name", "args"}}.
    decision = {"type": "edit", "edited_action": {"name": "withdraw", "args": edited}}
    result = agent.invoke(Command(resume=decision), config)
answer = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
print(answer.status, answer.content)


# %% tags=["remove-cell"]
if SCRIPTED:
    assert (answer.status, answer.content) == ("success", "sent 1000 USD to 0xabababab…")


# %%
# Another thread, another call: this time the person says no, with a message for the model.
config = {"configurable": {"thread_id": "approval-2"}}
result = agent.invoke({"messages": [{"role": "user", "content": f"Withdraw 1 ETH to {ADDRESS}"}]}, config)
if result.get("__interrupt__"):
    result = agent.invoke(Command(resume={"type": "reject", "message": "no crypto withdrawals"}), config)
answer = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
print(answer.status, answer.content)


# %% tags=["remove-cell"]
if SCRIPTED:
    refusal = json.loads(answer.content)
    assert answer.status == "error"
    assert (refusal["code"], refusal["reason"]) == ("approval_denied", "no crypto withdrawals")
    assert refusal["hint"].startswith("A human declined this call")


# %% [markdown]
# ## 3. The Agents SDK: interruptions and resume
#
# `guard_mcp_server` with no `approver` wires the policy into the SDK's own approval flow: a call that
# needs a person stops the run with `result.interruptions`. The state can be saved as a string (a
# database row, a queue message) and resumed later, in another process if need be.


# %%
from agents import Agent, Runner, RunState
from agents.mcp import MCPServerStdio

from mcp_guard.integrations.openai_agents import guard_mcp_server

audit = MemorySink()
server = guard_mcp_server(
    MCPServerStdio(params=exchange_stdio(), name="exchange", cache_tools_list=True),
    Guard(policy, audit=audit),
)
await server.connect()

model, label = agents_model(
    [("withdraw", {"asset": "USD", "amount": 2500, "address": ADDRESS})], final="Withdrew 2,500 USD."
)
agent = Agent(
    name="treasurer", instructions="Operate the exchange account.", mcp_servers=[server], **agent_kwargs(model)
)
result = await Runner.run(agent, f"Withdraw 2,500 USD to {ADDRESS}", context={"user_id": "alice"})
for item in result.interruptions:
    print("waiting for a person:", item.name, item.arguments)


# %% tags=["remove-cell"]
if label == "scripted":
    assert [i.name for i in result.interruptions] == ["withdraw"]
    assert audit.events == []  # nothing ran, nothing was counted


# %%
saved = result.to_state().to_string()  # durable: store it anywhere
print(f"saved state: {len(saved)} characters")

state = await RunState.from_string(agent, saved)
for item in state.get_interruptions():
    state.approve(item)
result = await Runner.run(agent, state)
outputs = [str(i.output) for i in result.new_items if i.type == "tool_call_output_item"]
print(outputs)
print("final answer:", result.final_output)


# %% tags=["remove-cell"]
if label == "scripted":
    assert any('"status": "sent"' in o for o in outputs)
    assert [(e["tool"], e["decision"]) for e in audit.events] == [("withdraw", "allow")]


# %%
# And a refusal: the model receives the person's message as the tool's output.
model, label = agents_model(
    [("withdraw", {"asset": "BTC", "amount": 0.1, "address": ADDRESS})], final="The withdrawal was refused."
)
agent = agent.clone(**agent_kwargs(model))
result = await Runner.run(agent, f"Withdraw 0.1 BTC to {ADDRESS}", context={"user_id": "alice"})
state = result.to_state()
for item in result.interruptions:
    state.reject(item, rejection_message="A person declined: crypto stays on the exchange.")
result = await Runner.run(agent, state)
outputs = [str(i.output) for i in result.new_items if i.type == "tool_call_output_item"]
print(outputs)
await server.cleanup()


# %% tags=["remove-cell"]
if label == "scripted":
    assert [json.loads(o)["reason"] for o in outputs] == ["A person declined: crypto stays on the exchange."]
    # The declined call never reached the server: the only withdrawal that ran is the approved one.
    ran = [(e["tool"], e["decision"]) for e in audit.events if e["decision"] == "allow"]
    assert ran == [("withdraw", "allow")]
