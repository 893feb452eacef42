"""``make demo-inbox``: an agent whose withdrawal waits in the approval inbox until a person decides on a web page.

A LangChain agent (scripted model, or a real one with OPENAI_API_KEY) works the demo exchange MCP server under
examples/policies/exchange.json. A crypto withdrawal needs a human there, so the guard puts it in an
:class:`~mcp_guard.Inbox` (``memory://``: this process) and waits. The inbox's page is served from this process
too: open the address printed below, with its token, and Approve, Edit or Reject the withdrawal. The address is
redacted by the policy, so the page shows ``[redacted]`` (leave it as shown to keep it).

``--auto`` stands in for the person (it approves through the inbox's JSON API, as a webhook receiver would), so
the demo finishes on its own. Run: ``python examples/inbox_demo.py [--auto] [--port 8765]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import threading
import time
import urllib.request
from typing import Any

from _scripted import EXCHANGE_POLICY, exchange_stdio, langchain_model, tool_call

from mcp_guard import Guard, Inbox, Policy
from mcp_guard._inbox.web import InboxServer, create_app

IDENTITY = "alice"
ADDRESS = "0x" + "5e" * 20
SCRIPT = [
    tool_call("get_balance", {"asset": "BTC"}),
    tool_call("withdraw", {"asset": "BTC", "amount": 0.25, "address": ADDRESS}),
    "Asked to withdraw 0.25 BTC; the outcome is above.",
]
TASK = f"Check alice's BTC balance, then withdraw 0.25 BTC to {ADDRESS}."


def auto_person(base_url: str, token: str, stop: threading.Event) -> None:
    """Approve the first request that appears, through the JSON API (what a webhook receiver would do)."""
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        with urllib.request.urlopen(urllib.request.Request(f"{base_url}/api/requests", headers=headers)) as response:
            pending = json.loads(response.read())["pending"]
        if pending:
            request = pending[0]
            print(f"[auto] approving {request['tool']} {json.dumps(request['args'])}", flush=True)
            body = json.dumps({"type": "approve"}).encode()
            post = urllib.request.Request(
                f"{base_url}/api/requests/{request['id']}/decision",
                data=body,
                method="POST",
                headers={**headers, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(post) as response:
                response.read()
            return
        stop.wait(0.2)


async def run_agent(guard: Guard) -> list[tuple[str, dict[str, Any], str]]:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    from mcp_guard.integrations.langchain import GuardMiddleware

    model, label = langchain_model(SCRIPT)
    print(f"model: {label}")
    client = MultiServerMCPClient({"exchange": {"transport": "stdio", **exchange_stdio()}})
    async with client.session("exchange") as session:
        tools = await load_mcp_tools(session, server_name="exchange")
        # The tools' MCP input schemas are shown beside the page's edit box.
        inbox: Any = guard.approver
        inbox.schemas.update({t.name: t.args_schema for t in tools if isinstance(t.args_schema, dict)})
        agent = create_agent(model, tools, middleware=[GuardMiddleware(guard, server="exchange")])
        result = await agent.ainvoke({"messages": [{"role": "user", "content": TASK}]}, context={"user_id": IDENTITY})
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    rows: list[tuple[str, dict[str, Any], str]] = []
    for message in result["messages"]:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                calls[str(call["id"])] = (call["name"], dict(call["args"]))
        elif isinstance(message, ToolMessage) and message.tool_call_id in calls:
            name, args = calls[message.tool_call_id]
            rows.append((name, args, message.text))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto", action="store_true", help="approve automatically (for tests and CI)")
    parser.add_argument("--port", type=int, default=0, help="port for the page (default: any free port)")
    args = parser.parse_args()

    policy = Policy.load(EXCHANGE_POLICY)
    inbox = Inbox("memory://demo", policy=policy)
    guard = Guard(policy, approver=inbox)
    token = secrets.token_urlsafe(24)
    with InboxServer(create_app(inbox, token=token), port=args.port) as server:
        print(f"approval inbox: {server.url}/?token={token}", flush=True)
        if args.auto:
            stop = threading.Event()
            person = threading.Thread(target=auto_person, args=(server.url, token, stop), daemon=True)
            person.start()
        else:
            print("open it in a browser; the withdrawal waits there for your decision (120 s)", flush=True)
        started = time.perf_counter()
        rows = asyncio.run(run_agent(guard))
        if args.auto:
            stop.set()
    print(f"\nagent finished in {time.perf_counter() - started:.1f} s")
    for name, call_args, output in rows:
        print(f"  {name} {json.dumps(call_args)} -> {' '.join(output.split())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
