"""``mcp_guard.testing``: the public scripted LangChain model the quick starts and examples run on."""

from __future__ import annotations

import subprocess
import sys

import pytest
from langchain_core.messages import AIMessage, HumanMessage

import mcp_guard.testing
from mcp_guard._install import install_hint
from mcp_guard.testing import ScriptedChatModel, tool_call


def test_the_public_names_are_pinned() -> None:
    assert set(mcp_guard.testing.__all__) == {"ScriptedChatModel", "Step", "tool_call"}
    # Every public thing the module defines is exported (the rest are imports; Step is a type alias).
    defined = {
        name
        for name, value in vars(mcp_guard.testing).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "mcp_guard.testing"
    }
    assert defined | {"Step"} == set(mcp_guard.testing.__all__)


def test_it_plays_its_script_and_binds_tools() -> None:
    model = ScriptedChatModel(
        [tool_call("get_balance", call_id="c1"), lambda messages: f"{len(messages)} messages so far", "bye"]
    )
    assert model.bind_tools([object()]) is model  # what create_agent needs; the fake models have none
    first = model.invoke([HumanMessage("hi")])
    assert isinstance(first, AIMessage)
    assert first.tool_calls == [{"name": "get_balance", "args": {}, "id": "c1", "type": "tool_call"}]
    assert model.invoke([HumanMessage("a"), HumanMessage("b")]).content == "2 messages so far"
    assert model.invoke("x").content == "bye"
    with pytest.raises(RuntimeError, match="no step for model call 4"):
        model.invoke("x")


async def test_it_plays_asynchronously_too() -> None:
    model = ScriptedChatModel(["one"])
    assert (await model.ainvoke("x")).content == "one"


def test_without_langchain_it_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "try:\n    import mcp_guard.testing\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("MissingExtraError")
    assert install_hint("langchain") in out.stdout
