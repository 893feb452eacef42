"""A worker process for the inbox browser test: one LangChain agent whose order waits in a Redis inbox.

``python -m tests.support.inbox_worker REDIS_URL RECORD_FILE IDENTITY ARGS_JSON [INBOX_OPTIONS_JSON]`` (from the
repository root): ``create_agent`` with a scripted model that calls ``place_order(**ARGS)`` once, on the recording
MCP server (a stdio subprocess), through ``GuardMiddleware`` whose Guard asks an :class:`~mcp_guard.Inbox` on Redis
(built with the given keyword options, e.g. ``{"lease_s": 1}``). Prints JSON lines on stdout: ``ready`` once the tools
are loaded, ``resumed`` (with the wall-clock time) the moment the inbox hands back a decision, and ``done`` with
the tool message the model got.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from langchain.agents import create_agent
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, Inbox
from mcp_guard.integrations.langchain import GuardMiddleware
from tests.support.langchain_helpers import call, script, text_of, tool_messages
from tests.support.servers.inbox_recording_server import server_params

# Orders need a human; an order over 1,000 USD is refused outright, also when a human edits one into it.
# The account is a secret: the inbox page must never show it.
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "exchange/place_order": {
            "action": "require_approval",
            "reason": "orders need a human's approval",
            "deny_if": {"args.amount": {"gt": 1000}},
            "redact": ["args.account"],
            "approval": {"timeout_s": 60},
        }
    },
}


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class TimedInbox(Inbox):
    """Reports the moment the decision reaches this worker (for the click-to-resume latency)."""

    async def __call__(self, request: ApprovalRequest) -> ApprovalDecision:
        decision = await super().__call__(request)
        emit("resumed", t=time.time(), kind=decision.kind)
        return decision


async def main(redis_url: str, record_file: str, identity: str, args: dict[str, Any], options: dict[str, Any]) -> None:
    client = MultiServerMCPClient({"exchange": server_params(record_file)})  # type: ignore[dict-item]
    async with client.session("exchange") as session:
        tools = await load_mcp_tools(session, server_name="exchange")
        schemas = {t.name: t.args_schema for t in tools if isinstance(t.args_schema, dict)}
        inbox = TimedInbox(redis_url, policy=POLICY, schemas=schemas, **options)
        guard = Guard(POLICY, approver=inbox)
        agent = create_agent(
            script(call("place_order", args, f"call-{identity}")),
            tools,
            middleware=[GuardMiddleware(guard, identity=identity, server="exchange")],
        )
        emit("ready")
        state = await agent.ainvoke({"messages": [("user", "place the order")]})
        (message,) = tool_messages(state["messages"])
        emit("done", status=message.status, text=text_of(message))


if __name__ == "__main__":
    url, record, who, raw = sys.argv[1:5]
    asyncio.run(main(url, record, who, json.loads(raw), json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}))
