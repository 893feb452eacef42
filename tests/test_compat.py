"""``_compat.tool_annotations``: what the proxy paths and the Agents adapter hand the Guard as a tool's
annotations, camelCase on mcp 1 and mcp 2 (mcp 2 dumps ``read_only_hint``: a policy's ``readOnlyHint``
condition and the retry rule's idempotency check must still see it). Declared hints only."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from mcp_guard._compat import tool_annotations


def test_wire_and_snake_case_dicts_read_as_camel_case_declared_hints() -> None:
    assert tool_annotations({"readOnlyHint": True, "title": None}) == {"readOnlyHint": True}
    assert tool_annotations({"read_only_hint": True, "idempotent_hint": False}) == {
        "readOnlyHint": True,
        "idempotentHint": False,
    }
    assert tool_annotations({"title": None}) is None
    assert tool_annotations(None) is None
    assert tool_annotations(["readOnlyHint"]) is None


def test_the_sdk_object_reads_the_same_on_either_mcp_version() -> None:
    annotations = ToolAnnotations.model_validate({"readOnlyHint": True, "destructiveHint": False})
    assert tool_annotations(annotations) == {"readOnlyHint": True, "destructiveHint": False}
