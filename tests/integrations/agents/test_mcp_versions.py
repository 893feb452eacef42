"""mcp 1.x and 2.x: results and tools read and built through ``mcp_guard._compat``, end to end.

Runs on whichever mcp is installed (CI runs the Agents SDK tests on mcp 1 and on the newest mcp 2). mcp 2
renamed ``isError`` to ``is_error``: reading one spelling made a failed call look successful, so it kept its
quota and the next call was wrongly ``rate_limited``. The judge is the recording server over stdio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents import set_tracing_disabled
from agents.mcp import MCPServerStdio
from mcp.types import CallToolResult, Tool, ToolAnnotations

from mcp_guard import Guard, MemorySink
from mcp_guard._compat import error_result, result_is_error, tool_annotations, tool_input_schema
from mcp_guard.integrations.openai_agents import guard_mcp_server, unguard_mcp_server
from tests.support.agents_helpers import call, run, script, tool_outputs, violation
from tests.support.marks import module_loop
from tests.support.servers.recording_server import read_record

set_tracing_disabled(True)


def test_error_result_is_an_error_in_the_installed_spelling() -> None:
    result = error_result('{"error": "policy_violation"}')
    assert isinstance(result, CallToolResult)
    assert result_is_error(result)
    assert result.content[0].text == '{"error": "policy_violation"}'  # type: ignore[union-attr]
    assert not result_is_error(CallToolResult.model_validate({"content": []}))


def test_tool_schema_and_annotations_read_in_either_spelling() -> None:
    tool = Tool.model_validate({"name": "t", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}})
    assert tool_input_schema(tool) == {"type": "object"}
    assert tool_annotations(tool.annotations) == {"readOnlyHint": True}
    assert tool_annotations({"read_only_hint": True, "_meta": 1}) == {"readOnlyHint": True, "_meta": 1}
    assert isinstance(tool.annotations, ToolAnnotations)


@module_loop
async def test_a_failing_tool_is_audited_error_and_gives_its_quota_back(
    agents_recording_server: MCPServerStdio, agents_record: Path
) -> None:
    policy: dict[str, Any] = {"version": "1", "default": "allow", "tools": {"fail": {"rate_limit": "1/minute"}}}
    sink = MemorySink()
    guard = Guard(policy, audit=sink, clock=lambda: 1_000.0)
    guard_mcp_server(agents_recording_server, guard)
    try:
        before = len(read_record(agents_record))
        model = script(call("fail", {"amount": 1}, "f1"), call("fail", {"amount": 2}, "f2"))
        _, result = await run(model, mcp_servers=[agents_recording_server])
    finally:
        unguard_mcp_server(agents_recording_server)
    assert result.final_output == "done"
    # Both ran: the first failure gave its unit back, so the second was not rate limited.
    assert [r["args"]["amount"] for r in read_record(agents_record)[before:]] == [1, 2]
    assert violation(tool_outputs(model)["f2"]) is None
    assert [(e["tool"], e["outcome"]) for e in sink.events] == [("fail", "error"), ("fail", "error")]
