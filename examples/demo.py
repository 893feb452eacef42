"""``make demo``: a LangChain agent and an OpenAI Agents SDK agent against the demo exchange MCP server, under
one policy (examples/policies/exchange.json), printing a table of every tool call and where the audit log is.

Both agents act for the same identity ("alice") through one Guard, so they share one rate-limit store: the
daily spend cap that the LangChain agent's orders used up also stops the Agents SDK agent's order. A scripted
"human" answers approvals (small USD withdrawals yes, crypto withdrawals no).

Offline by default (scripted models). With OPENAI_API_KEY set, real models choose the calls, so the table
shows whatever they did. Run: ``python examples/demo.py [--audit PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _scripted import (
    EXCHANGE_POLICY,
    agent_kwargs,
    agents_model,
    exchange_stdio,
    langchain_model,
    tool_call,
)

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, JsonlSink, Policy

IDENTITY = "alice"
ADDRESS = "0x" + "ab" * 20
TASK = (
    "You manage alice's exchange account. Check the balance and the BTC price, buy 4,000 USD of BTC, then try "
    "to buy 7,500 USD of BTC, 100 USD of DOGE and 4,000 USD of ETH, and revoke the API key 'key-trading'."
)
AGENTS_TASK = (
    "Check open orders, open a user-data stream, buy 3,000 USD of SOL, withdraw 500 USD and then 2,500 USD to "
    f"{ADDRESS}, withdraw 0.1 BTC to the same address, withdraw 100 USD to 'my-wallet', and place a 100 USD "
    "BTC order with 10x leverage."
)

LANGCHAIN_SCRIPT = [
    tool_call("get_balance", {}),
    tool_call("get_ticker", {"symbol": "BTCUSD"}),
    tool_call("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 4000}),
    tool_call("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
    tool_call("place_order", {"symbol": "DOGEUSD", "side": "buy", "amount": 100}),
    tool_call("place_order", {"symbol": "ETHUSD", "side": "buy", "amount": 4000}),
    tool_call("delete_api_key", {"api_key_id": "key-trading"}),
    "Bought 4,000 USD of BTC and 4,000 USD of ETH; the other requests were refused by the policy.",
]

AGENTS_SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("get_open_orders", {}),
    ("create_listen_key", {}),
    ("place_order", {"symbol": "SOLUSD", "side": "buy", "amount": 3000}),
    ("withdraw", {"asset": "USD", "amount": 500, "address": ADDRESS}),
    ("withdraw", {"asset": "USD", "amount": 2500, "address": ADDRESS}),
    ("withdraw", {"asset": "BTC", "amount": 0.1, "address": ADDRESS}),
    ("withdraw", {"asset": "USD", "amount": 100, "address": "my-wallet"}),
    ("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 100, "leverage": 10}),
]


@dataclass
class Row:
    agent: str
    tool: str
    args: dict[str, Any]
    output: str


# Nobody is at the keyboard during `make demo`: the table says who approved.
APPROVED = "approved (scripted human)"


def scripted_human(request: ApprovalRequest) -> ApprovalDecision:
    """Stands in for a person: approves USD withdrawals up to 3,000, declines everything else."""
    if request.tool == "withdraw" and request.args.get("asset") == "USD" and request.args.get("amount", 0) <= 3000:
        return ApprovalDecision.approve()
    return ApprovalDecision.deny("the account owner does not withdraw crypto from this account")


def violation_of(output: str) -> dict[str, Any] | None:
    """The policy violation payload if ``output`` is one (the JSON the model received), else None."""
    start = output.find('{"error"')
    if start < 0:
        return None
    try:
        payload = json.loads(output[start:])
    except ValueError:
        try:
            payload, _ = json.JSONDecoder().raw_decode(output[start:])
        except ValueError:
            return None
    return payload if isinstance(payload, dict) and payload.get("error") == "policy_violation" else None


# -- LangChain ---------------------------------------------------------------------------------------------


async def run_langchain(guard: Guard) -> tuple[list[Row], str]:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    from mcp_guard.integrations.langchain import GuardMiddleware

    model, label = langchain_model(LANGCHAIN_SCRIPT)
    client = MultiServerMCPClient({"exchange": {"transport": "stdio", **exchange_stdio()}})
    # One server process for the whole run (client.get_tools() would start one per call).
    async with client.session("exchange") as session:
        tools = await load_mcp_tools(session, server_name="exchange")
        agent = create_agent(model, tools, middleware=[GuardMiddleware(guard, server="exchange")])
        result = await agent.ainvoke(
            {"messages": [{"role": "user", "content": TASK}]},
            config={"configurable": {"thread_id": "langchain-demo"}},
            context={"user_id": IDENTITY},
        )
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    rows: list[Row] = []
    for message in result["messages"]:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                calls[str(call["id"])] = (call["name"], dict(call["args"]))
        elif isinstance(message, ToolMessage) and message.tool_call_id in calls:
            name, args = calls[message.tool_call_id]
            rows.append(Row("langchain", name, args, message.text))
    return rows, label


# -- OpenAI Agents SDK -------------------------------------------------------------------------------------


async def run_agents(guard: Guard) -> tuple[list[Row], str]:
    from agents import Agent, Runner
    from agents.items import ToolCallItem, ToolCallOutputItem
    from agents.mcp import MCPServerStdio

    from mcp_guard.integrations.openai_agents import guard_mcp_server

    model, label = agents_model(AGENTS_SCRIPT, final="Done: two withdrawals sent; the rest was refused.")
    server = guard_mcp_server(
        MCPServerStdio(params=exchange_stdio(), name="exchange", cache_tools_list=True), guard, identity=IDENTITY
    )
    async with server:
        agent = Agent(
            name="treasurer",
            instructions="You operate an exchange account with the tools you have. Do each step you are asked.",
            mcp_servers=[server],
            **agent_kwargs(model),
        )
        result = await Runner.run(agent, AGENTS_TASK, context={"user_id": IDENTITY, "session_id": "agents-demo"})
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    rows: list[Row] = []
    for item in result.new_items:
        if isinstance(item, ToolCallItem):
            raw: Any = item.raw_item
            calls[raw.call_id] = (raw.name, json.loads(raw.arguments or "{}"))
        elif isinstance(item, ToolCallOutputItem):
            raw_out: Any = item.raw_item
            call_id = raw_out["call_id"] if isinstance(raw_out, dict) else raw_out.call_id
            if call_id in calls:
                name, args = calls[call_id]
                rows.append(Row("agents-sdk", name, args, str(item.output)))
    return rows, label


# -- the table ---------------------------------------------------------------------------------------------


def classify(row: Row, policy: Policy) -> tuple[str, str, str]:
    """(decision, code, rule) for one call, from what the model received and what the policy says."""
    payload = violation_of(row.output)
    if payload is not None:
        return "deny", str(payload.get("code")), str(payload.get("rule", "-"))
    decision = policy.evaluate(row.tool, row.args, server="exchange", identity=IDENTITY)
    if decision.needs_approval:
        return APPROVED, "-", decision.rule or "-"
    return "allow", "-", decision.rule or "-"


def short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(rows: list[Row], policy: Policy) -> list[tuple[str, ...]]:
    header = ("agent", "tool", "arguments", "decision", "code", "rule")
    table = [(r.agent, r.tool, short(r.args, 52), *classify(r, policy)) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print(line)
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
    return table


def fresh_audit_path() -> Path:
    """``audit.jsonl`` in a new private temporary folder: a fixed path in the shared temp folder would be another
    user's file on a shared machine (or a symlink someone planted). The log stays after the run, for reading."""
    return Path(tempfile.mkdtemp(prefix="mcp-guard-demo-")) / "audit.jsonl"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--audit", type=Path, help="where to write the audit log (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.audit is None:
        args.audit = fresh_audit_path()
    args.audit.parent.mkdir(parents=True, exist_ok=True)
    args.audit.unlink(missing_ok=True)  # one run, one log

    started = time.perf_counter()
    policy = Policy.load(EXCHANGE_POLICY)
    sink = JsonlSink(args.audit)
    guard = Guard(policy, store="memory://", approver=scripted_human, audit=sink)
    print(f"policy: {policy.name} ({EXCHANGE_POLICY.name}, {policy.hash[:19]}…)")

    lc_rows, lc_label = await run_langchain(guard)
    oa_rows, oa_label = await run_agents(guard)
    guard.close()
    print(f"models: LangChain {lc_label}; Agents SDK {oa_label}\n")
    table = print_table(lc_rows + oa_rows, policy)

    events = [json.loads(line) for line in args.audit.read_text().splitlines() if line.strip()]
    denied = sum(1 for t in table if t[3] == "deny")
    print(f"\n{len(table)} calls: {len(table) - denied} went through, {denied} refused by the policy.")
    print("approvals were answered by a scripted human: USD withdrawals up to 3,000 yes, anything else no")
    print(f"audit log: {args.audit} ({len(events)} events, one JSON object per call)")
    print(f"finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
