"""Shared by the demo and the notebooks: where the example servers are, and scripted models for offline runs.

The examples run offline (and in CI) with scripted models that make a fixed sequence of tool calls, so every
output can be checked. With ``OPENAI_API_KEY`` set they use a real OpenAI model instead: the Agents SDK
through its default OpenAI provider, LangChain through ``langchain-openai`` when that package is installed.

The scripted models are the public ones: :class:`mcp_guard.testing.ScriptedChatModel` for LangChain and the
SDK's own ``agents.testing.ScriptedModel``; this module only chooses between them and a real model.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
POLICIES = HERE / "policies"
EXCHANGE_SERVER = SERVERS / "exchange_server.py"
NOTES_SERVER = SERVERS / "notes_server.py"
EXCHANGE_POLICY = POLICIES / "exchange.json"

# The Python that runs the examples also runs the servers, so they see the same installed packages.
PYTHON = sys.executable

_ids = itertools.count(1)


def real_model_available() -> bool:
    """True when ``OPENAI_API_KEY`` is set: the examples then ask a real model instead of following a script."""
    return bool(os.environ.get("OPENAI_API_KEY"))


def exchange_stdio() -> dict[str, Any]:
    """The demo exchange server as stdio connection parameters (for langchain-mcp-adapters and the Agents SDK)."""
    return {"command": PYTHON, "args": [str(EXCHANGE_SERVER)]}


# -- LangChain -------------------------------------------------------------------------------------------


def tool_call(name: str, args: dict[str, Any] | None = None, call_id: str | None = None) -> Any:
    """A model turn that calls one tool."""
    from mcp_guard.testing import tool_call as scripted_call

    return scripted_call(name, args, call_id=call_id or f"call_{next(_ids)}")


def scripted_chat_model(steps: Sequence[Any]) -> Any:
    """A LangChain chat model that plays ``steps`` in order, one per model call (see ``ScriptedChatModel``)."""
    from mcp_guard.testing import ScriptedChatModel

    return ScriptedChatModel(steps)


def langchain_model(steps: Sequence[Any]) -> tuple[Any, str]:
    """A real OpenAI chat model when a key is set and ``langchain-openai`` is installed, else the script.

    Returns the model and a label saying which one it is.
    """
    if real_model_available():
        try:
            from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]
        except ImportError:
            return scripted_chat_model(steps), "scripted (OPENAI_API_KEY is set, but langchain-openai is not installed)"
        return ChatOpenAI(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), temperature=0), "OpenAI (real model)"
    return scripted_chat_model(steps), "scripted"


# -- OpenAI Agents SDK -----------------------------------------------------------------------------------


def agents_model(calls: Sequence[tuple[str, dict[str, Any]]], final: str = "Done.") -> tuple[Any, str]:
    """An Agents SDK model: ``None`` (the SDK's default OpenAI model) when a key is set, else a ScriptedModel.

    ``calls`` are (tool, arguments), one per model turn, followed by a final answer.
    """
    if real_model_available():
        return None, "OpenAI (real model)"
    from agents import set_tracing_disabled
    from agents.testing import ScriptedModel, assistant_message, function_call

    # Tracing would try to upload spans to OpenAI; there is no key, and nothing to upload.
    set_tracing_disabled(True)
    steps: list[Any] = [[function_call(name, args, call_id=f"call_{next(_ids)}")] for name, args in calls]
    steps.append([assistant_message(final)])
    return ScriptedModel(steps), "scripted"


def agent_kwargs(model: Any) -> dict[str, Any]:
    """``Agent(..., **agent_kwargs(model))``: passes ``model`` only when there is one (None means the default)."""
    return {} if model is None else {"model": model}
