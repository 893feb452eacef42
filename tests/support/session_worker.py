"""A worker process for the shared-session test: one Guard on Redis in front of the real ``mailbox`` MCP server.

``python -m tests.support.session_worker REDIS_URL RECORD_FILE STEPS_JSON`` (from the repository
root): starts the ``mailbox`` test server (stdio,
recording into RECORD_FILE), builds a Guard with the session tests' policy on the Redis store, and runs the
steps in order: ``["observe", session, text]`` hands the user's words to session memory; ``["call", session,
tool, args]`` calls the tool through ``guard.arun`` (with the annotations the server lists). Prints one JSON line
per call: the session, the tool and the refusal code, or null when the server ran it. Everything this process
knows of a session is what the store holds: another process wrote it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_guard import Guard
from tests.support.servers import fixture_server

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "read_inbox": {"result": {"redact": {"result.text": {"detect": ["secrets"]}}}},
        "send_money": {"require": {"args.iban": {"from": ["user", "trusted"]}}},
        "send_email": {"require": {"args.body": {"no_secrets": True}}},
        "post": {"deny_if": {"session.untrusted": {"eq": True}}},
    },
}


async def main(redis_url: str, record_file: str, steps: list[list[Any]]) -> None:
    params = fixture_server.server_params("mailbox", record_file)
    server = StdioServerParameters(command=params["command"], args=params["args"], env=params["env"])
    guard = Guard(POLICY, store=redis_url)
    try:
        async with stdio_client(server) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            listed = {t.name: t for t in (await mcp.list_tools()).tools}
            for step in steps:
                if step[0] == "observe":
                    await guard.aobserve_input(step[2], session=step[1])
                    continue
                _, session, tool, args = step

                async def call(tool: str = tool, **kwargs: Any) -> Any:
                    return await mcp.call_tool(tool, kwargs)

                annotations = listed[tool].annotations
                result = await guard.arun(
                    tool,
                    args,
                    call,
                    session=session,
                    server="mail",
                    annotations=annotations.model_dump(exclude_none=True) if annotations else None,
                )
                code = None if result.violation is None else result.violation.code
                print(json.dumps({"session": session, "tool": tool, "code": code}), flush=True)
    finally:
        guard.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
