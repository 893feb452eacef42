"""LangChain tool objects for the adapters: what is read off them (who is calling, from the runtime context or
``configurable``; which MCP server a tool came from; its annotations and input schema) and the guarded call
functions ``wrap_tools`` puts on their copies. No decisions: the facts a call is decided on, and the results
(``GuardResult``) translated back into what LangChain expects.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool, StructuredTool, ToolException

from mcp_guard._guard.guard import Guard, GuardResult
from mcp_guard._policy.decision import Decision
from mcp_guard.integrations._adapt import Bounded, field

log = logging.getLogger("mcp_guard")

# An identity or session option: a fixed string, or a callable given the ToolRuntime (or, outside a graph,
# the RunnableConfig) of the call.
WhoOption: TypeAlias = str | Callable[[Any], Any] | None
ServerOption: TypeAlias = str | Mapping[str, str] | None

# LangGraph keeps the graph Runtime (and so the agent's context) under this key of the config.
_RUNTIME_KEY = "__pregel_runtime"
_NOTHING: Mapping[str, Any] = MappingProxyType({})


def _who(identity: WhoOption, session: WhoOption, *, runtime: Any = None, config: Any = None) -> dict[str, Any]:
    """:func:`resolve_caller` as the Guard's keyword arguments, plus the ids (LangGraph's ``thread_id`` as the
    run id, the ToolRuntime's ``tool_call_id`` as the call id; None outside a graph) and the runtime context."""
    if config is None:
        config = getattr(runtime, "config", None) if runtime is not None else None
        if config is None:
            config = var_child_runnable_config.get()
    configurable = (config.get("configurable") if config.__class__ is dict else field(config, "configurable")) or {}
    if runtime is not None:
        context = getattr(runtime, "context", None)
    else:  # a tool without an injected runtime: the graph's Runtime is in the config
        context = getattr(configurable.get(_RUNTIME_KEY), "context", None)
    given = runtime if runtime is not None else config
    thread = configurable.get("thread_id")
    if identity is None:
        who = field(context, "user_id")
        who = who if who is not None else field(context, "identity")
        who = who if who is not None else configurable.get("user_id")
    else:
        who = identity(given) if callable(identity) else identity
    if session is None:
        sess = thread if thread is not None else field(context, "session_id")
    else:
        sess = session(given) if callable(session) else session
    return {
        "identity": None if who is None else str(who),
        "session": None if sess is None else str(sess),
        "run_id": None if thread is None else str(thread),
        "call_id": getattr(runtime, "tool_call_id", None),
        # The agent's runtime context (create_agent's context_schema), for context.* conditions. Not
        # ``configurable``: that is the run's configuration, not who is calling.
        "context": context,
    }


def _server_for(server: ServerOption, tool: str) -> str | None:
    return server if server is None or isinstance(server, str) else server.get(tool)


def _annotations(tool: BaseTool | None) -> Mapping[str, Any] | None:
    # langchain-mcp-adapters puts the MCP ToolAnnotations dump (readOnlyHint, destructiveHint, ...) in metadata.
    metadata = getattr(tool, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else None


def _listed(guard: Guard, tool: BaseTool, server: str | None) -> bool:
    """:meth:`Guard.listed` for a LangChain tool: whether to show it, comparing it with the policy's pins.

    langchain-mcp-adapters keeps the MCP tool's description (``""`` for none), its ``inputSchema`` dict as
    ``args_schema`` and its annotations in ``metadata``: the fields ``mcp-guard pin`` locks.
    """
    schema = getattr(tool, "args_schema", None)
    return guard.listed(
        tool.name,
        server=server,
        annotations=_annotations(tool),
        description=tool.description,
        input_schema=schema if isinstance(schema, Mapping) else None,
    )


def _mcp_server_of(tool: BaseTool | None) -> str | None:
    """The MCP server a langchain-mcp-adapters tool was loaded from (``load_mcp_tools(..., server_name=...)``).

    The tool does not carry it as data: its call function closes over ``server_name``. Read once at wrap
    time, so server-qualified rules (``exchange/withdraw``) apply without a ``server=`` argument.
    """
    coroutine = getattr(tool, "coroutine", None)
    if coroutine is None or not getattr(coroutine, "__module__", "").startswith("langchain_mcp_adapters"):
        return None
    try:
        name = inspect.getclosurevars(coroutine).nonlocals.get("server_name")
    except (TypeError, ValueError):
        return None
    return name if isinstance(name, str) and name and name != "unknown" else None


def _tool_schema(tool: BaseTool | None) -> Any:
    """The input schema the Guard checks a call of ``tool`` against, strictly (spec section 8), or None.

    MCP tools from langchain-mcp-adapters carry the server's ``inputSchema`` dict as ``args_schema``; other
    structured tools a pydantic model, of which ``tool_call_schema`` is the part the model fills in (injected
    arguments such as ``runtime`` left out). Computed once per tool: the Guard caches validators by schema.
    """
    schema = getattr(tool, "args_schema", None)
    if tool is None or isinstance(schema, Mapping):
        return schema
    if not isinstance(tool, StructuredTool) or schema is None:
        return None  # a single-input Tool: the model sends one string, there is nothing to check against
    try:
        return tool.tool_call_schema
    except Exception:  # a schema LangChain cannot build: the Guard still checks what it can
        log.warning("no usable argument schema for tool %s", tool.name)
        return None


class UserInputs:
    """Hands the user's messages (LangChain ``HumanMessage``) to the guard's session memory, each message once.

    Adapters see the conversation at different moments (the middleware before each model turn, a tool with an
    injected runtime in the graph state); each message is observed the first time one of them sees it, by its
    id (LangGraph gives every message one) or, without an id, its text. Costs nothing unless some check of
    the policy reads the user's requests (``from: [user]``).
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.seen: Bounded[tuple[str, str], None] = Bounded(50_000)

    def _new(self, messages: Any, session: str | None) -> list[str]:
        if session is None or "texts" not in self.guard.policy.session_reads or not isinstance(messages, list):
            return []
        texts: list[str] = []
        for message in messages:
            if getattr(message, "type", None) != "human":
                continue
            text = message.text if isinstance(getattr(message, "text", None), str) else str(message.content)
            key = (session, str(getattr(message, "id", None) or hash(text)))
            if key in self.seen:
                continue
            self.seen[key] = None
            texts.append(text)
        return texts

    def observe(self, messages: Any, session: str | None) -> None:
        for text in self._new(messages, session):
            self.guard.observe_input(text, session=session)

    async def aobserve(self, messages: Any, session: str | None) -> None:
        for text in self._new(messages, session):
            await self.guard.aobserve_input(text, session=session)


def state_messages(holder: Any) -> Any:
    """The graph state's messages of a ``ToolRuntime`` or ``ToolCallRequest`` (None outside a graph)."""
    state = getattr(holder, "state", None)
    return state.get("messages") if isinstance(state, Mapping) else getattr(state, "messages", None)


class _GuardToolException(ToolException):
    """A refused call, raised inside a wrapped tool so LangChain turns it into ``ToolMessage(status="error")``."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.content = decision.to_json()
        super().__init__(self.content)


def _error_handler(original: Any) -> Callable[[ToolException], Any]:
    """Our refusals become the violation JSON; every other ToolException is handled as the original tool did."""

    def handle(error: ToolException) -> Any:
        if isinstance(error, _GuardToolException):
            return error.content
        if not original:
            raise error
        if original is True:
            return error.args[0] if error.args else "Tool execution error"
        return original if isinstance(original, str) else original(error)

    return handle


class _ToolSpec:
    """What a wrapped tool needs at call time, resolved once at wrap time."""

    __slots__ = ("guard", "identity", "injected", "inputs", "known", "name", "session")

    def __init__(
        self,
        tool: BaseTool,
        guard: Guard,
        identity: WhoOption,
        session: WhoOption,
        server: str | None,
        inputs: UserInputs | None = None,
    ):
        self.name = tool.name
        self.guard = guard
        self.inputs = inputs if inputs is not None else UserInputs(guard)
        self.identity = identity
        self.session = session
        self.known = {"server": server, "annotations": _annotations(tool), "tool_schema": _tool_schema(tool)}
        # Arguments LangChain injects (runtime, state, callbacks, config): passed through, never shown to the policy.
        self.injected = frozenset({"callbacks", "run_manager", "config", *getattr(tool, "_injected_args_keys", ())})

    def prepare(
        self, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[..., Any], dict[str, Any]]:
        """(the model's arguments, the original called with the admitted ones, the Guard's keyword arguments).

        ``kwargs`` is a fresh dict per call: ours to keep. A single-input tool called with a string shows the
        policy ``tool_input``.
        """
        if self.injected.isdisjoint(kwargs):  # the common case: nothing injected, no copy
            call_args, extra = kwargs, _NOTHING
        else:
            call_args, extra = {}, {}
            for key, value in kwargs.items():
                (extra if key in self.injected else call_args)[key] = value
        if args:
            call_args["tool_input"] = args[0] if len(args) == 1 else list(args)

        def call(**admitted: Any) -> Any:
            if not args:
                return original(**admitted, **extra)
            value = admitted.pop("tool_input")
            return original(*((value,) if len(args) == 1 else value), **admitted, **extra)

        runtime = extra.get("runtime")
        who = _who(self.identity, self.session, runtime=runtime)
        return call_args, call, {**self.known, **who}

    def deliver(self, result: GuardResult) -> Any:
        if result.violation is not None:
            raise _GuardToolException(self.guard.violation(result.violation))
        return result.value


def _guarded(original: Callable[..., Any], spec: _ToolSpec, is_async: bool) -> Callable[..., Any]:
    async def aguarded(*args: Any, **kwargs: Any) -> Any:
        call_args, call, context = spec.prepare(original, args, kwargs)
        if "runtime" in kwargs:  # the graph's conversation: the user's messages go to session memory first
            await spec.inputs.aobserve(state_messages(kwargs["runtime"]), context["session"])
        return spec.deliver(await spec.guard.arun(spec.name, call_args, call, **context))

    def sguarded(*args: Any, **kwargs: Any) -> Any:
        call_args, call, context = spec.prepare(original, args, kwargs)
        if "runtime" in kwargs:
            spec.inputs.observe(state_messages(kwargs["runtime"]), context["session"])
        return spec.deliver(spec.guard.run(spec.name, call_args, call, **context))

    guarded: Callable[..., Any] = aguarded if is_async else sguarded

    # functools.wraps keeps the original's annotations (and __wrapped__): LangChain reads them to decide what
    # to inject (an MCP tool's ``runtime``, a RunnableConfig, callbacks), so the wrapper gets exactly what the
    # original would have got, and passes it on. A precomputed __signature__ spares LangChain unwrapping and
    # re-deriving it on every call (a callable without one: LangChain unwraps __wrapped__ as before).
    functools.update_wrapper(guarded, original)
    with contextlib.suppress(TypeError, ValueError):
        guarded.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    return guarded
