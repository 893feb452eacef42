"""Scripted models: run a guarded agent with no model provider, no key and no network.

For LangChain, :class:`ScriptedChatModel` is a chat model that plays a fixed script, one step per model call,
and accepts ``bind_tools`` (LangChain's own ``GenericFakeChatModel`` has none, so ``create_agent`` cannot use
it). A step is a model turn that calls a tool (:func:`tool_call`), a final answer (a string), or a callable that
reads the conversation so far and returns one of those: that is how a script reports what a tool said::

    from mcp_guard.testing import ScriptedChatModel, tool_call

    model = ScriptedChatModel([
        tool_call("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
        lambda messages: f"The exchange said: {messages[-1].content}",
    ])
    agent = create_agent(model, tools, middleware=[GuardMiddleware(guard)])

For the OpenAI Agents SDK, use the SDK's own ``agents.testing.ScriptedModel`` (with ``function_call`` and
``assistant_message`` from the same module): it needs nothing from mcp-guard.

Use it for quick starts, demos and tests of a policy's wiring. It is not a model: it ignores the tools it is
bound to and the prompt, so it shows what the guard does with the calls you script, not what a model would ask.
Needs the ``langchain`` extra.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mcp_guard._errors import require_extra

require_extra("langchain_core", "langchain", "mcp_guard.testing")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

#: One step of a script: a model turn, a final answer, or a callable that reads the conversation and returns one.
Step = AIMessage | str | Callable[[list[BaseMessage]], AIMessage | str]

_ids = itertools.count(1)


def tool_call(name: str, args: dict[str, Any] | None = None, *, call_id: str | None = None) -> AIMessage:
    """A model turn that calls the tool ``name`` with ``args`` (a fresh call id unless ``call_id`` is given)."""
    call = {"name": name, "args": dict(args or {}), "id": call_id or f"call_{next(_ids)}", "type": "tool_call"}
    return AIMessage("", tool_calls=[call])


class ScriptedChatModel(GenericFakeChatModel):
    """A LangChain chat model that plays ``steps`` in order, one per model call; usable with ``create_agent``.

    ``bind_tools`` returns the model itself: the script already knows its calls. Calling the model once more
    than the script has steps raises ``RuntimeError`` naming the call, rather than a bare ``StopIteration``.
    """

    _script: Iterator[Step] = PrivateAttr()
    _played: int = PrivateAttr(default=0)

    def __init__(self, steps: Sequence[Step] = (), /, **kwargs: Any) -> None:
        kwargs.setdefault("messages", iter(()))  # the parent's own script, unused: ours may hold callables
        super().__init__(**kwargs)
        self._script = iter(list(steps))

    @property
    def _llm_type(self) -> str:
        return "mcp-guard-scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self._played += 1
        try:
            step = next(self._script)
        except StopIteration:
            raise RuntimeError(f"ScriptedChatModel: the script has no step for model call {self._played}") from None
        if callable(step):
            step = step(messages)
        message = AIMessage(content=step) if isinstance(step, str) else step
        return ChatResult(generations=[ChatGeneration(message=message)])


__all__ = ["ScriptedChatModel", "Step", "tool_call"]
