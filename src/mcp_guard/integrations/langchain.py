"""LangChain adapters: a tool wrapper, an MCP interceptor and agent middleware around one :class:`~mcp_guard.Guard`.

Three places to put the same policy; pick one per tool (stacking them charges rate limits twice):

* :func:`wrap_tools` wraps the tools themselves (plain LangChain tools or those ``langchain-mcp-adapters`` loads);
  tools the policy hides or denies outright are left out of what the model is shown.
* :class:`GuardInterceptor` sits inside ``langchain-mcp-adapters`` (``tool_interceptors=[...]``) and knows the
  MCP server's name, so server-qualified rules (``github/create_issue``) apply; it cannot hide tools.
* :class:`GuardMiddleware` sits in ``create_agent(middleware=[...])`` and can pause the graph for a human
  (``approval="interrupt"``) with LangGraph's ``interrupt``.

The adapters hold no policy logic: they translate a framework call into ``Guard.arun`` / ``Guard.run`` and the
:class:`~mcp_guard.Decision` back into what the framework shows the model: an error ``ToolMessage`` (or an MCP
``isError`` result) whose text is the violation JSON. Nothing here ends an agent run, unless the guard was built
with ``on_violation="raise"``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from mcp_guard._decision import Decision
from mcp_guard._errors import PolicyViolation, require_extra
from mcp_guard._guard import Guard, GuardResult, PolicySource, as_guard

_FEATURE = "mcp_guard.integrations.langchain"

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse, ToolCallRequest
    from langchain_core.messages import ToolMessage
    from langchain_core.runnables.config import var_child_runnable_config
    from langchain_core.tools import BaseTool, StructuredTool, Tool, ToolException
    from langgraph.types import Command, interrupt
except ImportError as exc:  # name the extra to install, not the first module that happened to be missing
    require_extra(exc.name or "langchain", "langchain", _FEATURE)
    raise

if TYPE_CHECKING:
    from langchain_mcp_adapters.interceptors import MCPToolCallRequest
    from mcp.types import CallToolResult

__all__ = ["GuardInterceptor", "GuardMiddleware", "resolve_caller", "wrap_tools"]

log = logging.getLogger("mcp_guard")

# An identity or session option: a fixed string, or a callable given the ToolRuntime (or, outside a graph,
# the RunnableConfig) of the call.
WhoOption: TypeAlias = str | Callable[[Any], Any] | None
ServerOption: TypeAlias = str | Mapping[str, str] | None

# LangGraph keeps the graph Runtime (and so the agent's context) under this key of the config.
_RUNTIME_KEY = "__pregel_runtime"


# -- who is calling -------------------------------------------------------------------------------------


def _field(source: Any, key: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def resolve_caller(
    identity: WhoOption = None, session: WhoOption = None, *, runtime: Any = None, config: Any = None
) -> tuple[str | None, str | None]:
    """The (identity, session) of a call, as all three adapters find them.

    Defaults: identity is the runtime context's ``user_id`` (dict key or attribute), then its ``identity``, then
    ``configurable.user_id``; session is ``configurable.thread_id``, then the context's ``session_id``. A string
    option is used as is; a callable gets the ``ToolRuntime`` (or the ``RunnableConfig`` when there is none) and
    its answer is used even when it is ``None``. ``config`` defaults to the runtime's, else LangChain's current one.
    """
    if identity.__class__ is str and session.__class__ is str:  # both fixed: nothing to look up
        return identity, session
    if config is None:
        config = getattr(runtime, "config", None) if runtime is not None else None
        if config is None:
            config = var_child_runnable_config.get()
    configurable = (config.get("configurable") if config.__class__ is dict else _field(config, "configurable")) or {}
    if runtime is not None:
        context = getattr(runtime, "context", None)
    else:  # a tool without an injected runtime: the graph's Runtime is in the config
        context = getattr(configurable.get(_RUNTIME_KEY), "context", None)

    if identity is None:
        who = _field(context, "user_id")
        if who is None:
            who = _field(context, "identity")
        if who is None:
            who = configurable.get("user_id")
    elif callable(identity):
        who = identity(runtime if runtime is not None else config)
    else:
        who = identity

    if session is None:
        sess = configurable.get("thread_id")
        if sess is None:
            sess = _field(context, "session_id")
    elif callable(session):
        sess = session(runtime if runtime is not None else config)
    else:
        sess = session
    return (None if who is None else str(who)), (None if sess is None else str(sess))


def _server_for(server: ServerOption, tool: str) -> str | None:
    if server is None or isinstance(server, str):
        return server
    return server.get(tool)


def _annotations(tool: BaseTool | None) -> Mapping[str, Any] | None:
    # langchain-mcp-adapters puts the MCP ToolAnnotations dump (readOnlyHint, destructiveHint, ...) in metadata.
    metadata = getattr(tool, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else None


def _guard_failed(guard: Guard, tool: str, server: str | None, exc: BaseException) -> Decision:
    """A guard that failed before the tool ran refuses the call (closed) instead of ending the run."""
    log.exception("mcp-guard failed while checking %s", tool, exc_info=exc)
    return Decision.deny(
        tool,
        "guard_unavailable",
        server=server,
        reason=f"the policy guard failed: {type(exc).__name__}",
        rule="/guard",
        policy=guard.policy.hash,
    )


def _violation_or_raise(guard: Guard, decision: Decision) -> Decision:
    if guard.on_violation == "raise":
        raise PolicyViolation(decision)
    return decision


# -- wrap_tools -----------------------------------------------------------------------------------------


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
        if isinstance(original, str):
            return original
        return original(error)

    return handle


class _ToolSpec:
    """What a wrapped tool needs at call time, resolved once at wrap time."""

    __slots__ = ("annotations", "guard", "identity", "injected", "name", "server", "session")

    def __init__(
        self,
        tool: BaseTool,
        guard: Guard,
        identity: WhoOption,
        session: WhoOption,
        server: str | None,
        annotations: Mapping[str, Any] | None,
    ) -> None:
        self.name = tool.name
        self.guard = guard
        self.identity = identity
        self.session = session
        self.server = server
        self.annotations = annotations
        # Arguments LangChain injects (runtime, state, callbacks, config): passed through, never shown to the policy.
        injected: set[str] = {"callbacks", "run_manager", "config"}
        injected.update(getattr(tool, "_injected_args_keys", ()))
        self.injected = frozenset(injected)

    def split(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """(the model's arguments, what LangChain injected). ``kwargs`` is a fresh dict per call: ours to keep."""
        injected = self.injected
        if injected.isdisjoint(kwargs):  # the common case: nothing injected, no copy
            call_args: dict[str, Any] = kwargs
            extra: Mapping[str, Any] = _NOTHING
        else:
            call_args, extra = {}, {}
            for key, value in kwargs.items():
                (extra if key in injected else call_args)[key] = value
        if args:  # a single-input tool called with a string: the policy sees it as ``tool_input``
            call_args["tool_input"] = args[0] if len(args) == 1 else list(args)
        return call_args, extra

    def caller(self, extra: Mapping[str, Any]) -> tuple[str | None, str | None]:
        return resolve_caller(self.identity, self.session, runtime=extra.get("runtime"))


_NOTHING: Mapping[str, Any] = MappingProxyType({})


def _positional(args: tuple[Any, ...], call_args: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rest = dict(call_args)
    value = rest.pop("tool_input", args[0] if len(args) == 1 else list(args))
    return ((value,) if len(args) == 1 else tuple(value)), rest


def _same_signature(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    # functools.wraps keeps the original's annotations (and __wrapped__): LangChain reads them to decide what
    # to inject (an MCP tool's ``runtime``, a RunnableConfig, callbacks), so the wrapper gets exactly what the
    # original would have got, and passes it on. A precomputed __signature__ spares LangChain unwrapping and
    # re-deriving it on every call.
    functools.update_wrapper(wrapper, original)
    # A callable without a signature (TypeError/ValueError): LangChain unwraps __wrapped__ as before.
    with contextlib.suppress(TypeError, ValueError):
        wrapper.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]


def _async_wrapper(original: Callable[..., Awaitable[Any]], spec: _ToolSpec) -> Callable[..., Awaitable[Any]]:
    guard, name, server, annotations = spec.guard, spec.name, spec.server, spec.annotations

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        call_args, extra = spec.split(args, kwargs)
        identity, session = spec.caller(extra)
        called = False

        async def call(**edited: Any) -> Any:
            nonlocal called
            called = True
            if args:
                pos, named = _positional(args, edited)
                return await original(*pos, **named, **extra)
            return await original(**edited, **extra)

        try:
            result: GuardResult = await guard.arun(
                name, call_args, call, server=server, identity=identity, session=session, annotations=annotations
            )
        except Exception as exc:
            if called:  # the tool's own failure: exactly what the unguarded tool would have raised
                raise
            raise _GuardToolException(_guard_failed(guard, name, server, exc)) from exc
        if result.violation is not None:
            raise _GuardToolException(_violation_or_raise(guard, result.violation))
        return result.value

    _same_signature(guarded, original)
    return guarded


def _sync_wrapper(original: Callable[..., Any], spec: _ToolSpec) -> Callable[..., Any]:
    guard, name, server, annotations = spec.guard, spec.name, spec.server, spec.annotations

    def guarded(*args: Any, **kwargs: Any) -> Any:
        call_args, extra = spec.split(args, kwargs)
        identity, session = spec.caller(extra)
        called = False

        def call(**edited: Any) -> Any:
            nonlocal called
            called = True
            if args:
                pos, named = _positional(args, edited)
                return original(*pos, **named, **extra)
            return original(**edited, **extra)

        try:
            result: GuardResult = guard.run(
                name, call_args, call, server=server, identity=identity, session=session, annotations=annotations
            )
        except Exception as exc:
            if called:
                raise
            raise _GuardToolException(_guard_failed(guard, name, server, exc)) from exc
        if result.violation is not None:
            raise _GuardToolException(_violation_or_raise(guard, result.violation))
        return result.value

    _same_signature(guarded, original)
    return guarded


def wrap_tools(
    tools: Sequence[BaseTool],
    policy_or_guard: PolicySource,
    *,
    approver: Any = None,
    identity: WhoOption = None,
    session: WhoOption = None,
    server: ServerOption = None,
    hide_denied: bool = True,
    **guard_options: Any,
) -> list[BaseTool]:
    """Copies of ``tools`` that run every call through the policy; the originals are untouched.

    The copies keep name, description, argument schema, metadata and response format, sync and async where the
    original has them; MCP tools keep their artifacts and their ``runtime`` injection. A refused call comes back
    as ``ToolMessage(status="error")`` whose content is the violation JSON. With ``hide_denied`` the tools the
    policy hides or denies outright are left out. ``server`` names the MCP server (one name, or a map from tool
    name) so server-qualified rules apply. ``guard_options`` build the :class:`~mcp_guard.Guard` (store, audit,
    ...) when a policy rather than a Guard is passed.

    Not for tools of a custom ``BaseTool`` subclass (only ``StructuredTool`` and ``Tool`` can be copied with a
    new function): put :class:`GuardMiddleware` around those instead.
    """
    if approver is not None:
        guard_options["approver"] = approver
    guard = as_guard(policy_or_guard, **guard_options)
    wrapped: list[BaseTool] = []
    for tool in tools:
        if not isinstance(tool, (StructuredTool, Tool)):
            raise TypeError(
                f"wrap_tools cannot wrap {type(tool).__name__} {tool.name!r}: only StructuredTool and Tool; "
                "use GuardMiddleware for other tools"
            )
        tool_server = _server_for(server, tool.name)
        annotations = _annotations(tool)
        if hide_denied and not guard.exposes(tool.name, server=tool_server, annotations=annotations):
            continue
        spec = _ToolSpec(tool, guard, identity, session, tool_server, annotations)
        update: dict[str, Any] = {"handle_tool_error": _error_handler(tool.handle_tool_error)}
        if tool.coroutine is not None:
            update["coroutine"] = _async_wrapper(tool.coroutine, spec)
        if tool.func is not None:
            update["func"] = _sync_wrapper(tool.func, spec)
        wrapped.append(tool.model_copy(update=update))
    return wrapped


# -- GuardInterceptor -----------------------------------------------------------------------------------


class GuardInterceptor:
    """A ``langchain-mcp-adapters`` tool interceptor that enforces the policy before the MCP server is called.

    >>> client = MultiServerMCPClient(conns, tool_interceptors=[GuardInterceptor(policy)])

    Uses the request's ``server_name``, so server-qualified rules apply. A refused call returns
    ``CallToolResult(isError=True)`` with the violation JSON and never reaches the server. It cannot hide tools
    from the model (it only sees calls): use :func:`wrap_tools` or :class:`GuardMiddleware` for that.
    """

    def __init__(
        self,
        policy_or_guard: PolicySource,
        *,
        approver: Any = None,
        identity: WhoOption = None,
        session: WhoOption = None,
        **guard_options: Any,
    ) -> None:
        if approver is not None:
            guard_options["approver"] = approver
        self.guard = as_guard(policy_or_guard, **guard_options)
        self.identity = identity
        self.session = session
        types = require_extra("mcp.types", "langchain", "GuardInterceptor")
        self._result_type: type[CallToolResult] = types.CallToolResult
        self._text_type: Any = types.TextContent

    def _refusal(self, decision: Decision) -> CallToolResult:
        text = _violation_or_raise(self.guard, decision).to_json()
        return self._result_type(isError=True, content=[self._text_type(type="text", text=text)])

    async def __call__(
        self,
        request: MCPToolCallRequest,
        handler: Callable[[MCPToolCallRequest], Awaitable[Any]],
    ) -> Any:
        # langchain-mcp-adapters says "unknown" when it was not given a server name.
        server = request.server_name if request.server_name != "unknown" else None
        runtime = request.runtime
        identity, session = resolve_caller(self.identity, self.session, runtime=runtime)
        called = False

        async def call(**args: Any) -> Any:
            nonlocal called
            called = True
            return await handler(request.override(args=args))

        try:
            result = await self.guard.arun(
                request.name,
                request.args,
                call,
                server=server,
                identity=identity,
                session=session,
                annotations=_runtime_annotations(runtime, request.name, server),
            )
        except Exception as exc:
            if called:
                raise
            return self._refusal(_guard_failed(self.guard, request.name, server, exc))
        if result.violation is not None:
            return self._refusal(result.violation)
        return result.value


def _runtime_annotations(runtime: Any, name: str, server: str | None) -> Mapping[str, Any] | None:
    # The interceptor request carries no tool metadata; inside an agent the ToolRuntime lists the tools.
    for tool in getattr(runtime, "tools", None) or ():
        if tool.name == name or (server is not None and tool.name == f"{server}_{name}"):
            return _annotations(tool)
    return None


# -- GuardMiddleware ------------------------------------------------------------------------------------

_middleware_ids = itertools.count(1)


class GuardMiddleware(AgentMiddleware):
    """``create_agent`` middleware that enforces the policy on every tool call, sync and async.

    ``approval="callback"`` asks the guard's approver (``approver=``); ``approval="interrupt"`` pauses the graph
    with LangGraph's ``interrupt`` (needs a checkpointer and a ``thread_id``) and resumes with
    ``Command(resume=...)``: ``{"type": "approve"}``, ``{"type": "reject", "message": ...}``,
    ``{"type": "edit", "args": {...}}``, ``True`` or ``False``. No quota is used before the pause; edited
    arguments are evaluated again. With ``hide_denied`` the tools the policy hides or denies outright are taken
    out of what the model is shown. ``server`` names the MCP server (one name, or a map from tool name).

    Put it inside (after) ``ToolRetryMiddleware`` so each retry is checked and counted, and build its Guard with
    ``retry=False`` there so retries are not nested. LangChain's ``HumanInTheLoopMiddleware`` asks before any of
    this runs (after the model turn), so a call can need both approvals. Several tool calls in one model turn
    pause once each; resume them together with ``Command(resume={interrupt_id: value, ...})``.
    """

    def __init__(
        self,
        policy_or_guard: PolicySource,
        *,
        approval: Literal["callback", "interrupt"] = "callback",
        approver: Any = None,
        identity: WhoOption = None,
        session: WhoOption = None,
        server: ServerOption = None,
        hide_denied: bool = True,
        name: str | None = None,
        **guard_options: Any,
    ) -> None:
        super().__init__()
        if approval not in ("callback", "interrupt"):
            raise ValueError(f"approval must be 'callback' or 'interrupt', not {approval!r}")
        if approver is not None:
            guard_options["approver"] = approver
        self.guard = as_guard(policy_or_guard, **guard_options)
        self.approval = approval
        self.identity = identity
        self.session = session
        self.server = server
        self.hide_denied = hide_denied
        # create_agent refuses two middleware with one name: number the instances.
        self._name = name or f"GuardMiddleware_{next(_middleware_ids)}"

    @property
    def name(self) -> str:
        return self._name

    # -- hiding tools from the model --------------------------------------------------------------------

    def _visible(self, request: ModelRequest) -> ModelRequest:
        if not self.hide_denied:
            return request
        guard = self.guard
        tools = [
            t
            for t in request.tools
            if not isinstance(t, BaseTool)
            or guard.exposes(t.name, server=_server_for(self.server, t.name), annotations=_annotations(t))
        ]
        return request if len(tools) == len(request.tools) else request.override(tools=tools)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        return handler(self._visible(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        return await handler(self._visible(request))

    # -- tool calls -------------------------------------------------------------------------------------

    def _who(self, request: ToolCallRequest) -> dict[str, Any]:
        name = request.tool_call["name"]
        identity, session = resolve_caller(self.identity, self.session, runtime=request.runtime)
        return {
            "server": _server_for(self.server, name),
            "identity": identity,
            "session": session,
            "annotations": _annotations(request.tool),
        }

    def _pause(self, request: ToolCallRequest, decision: Decision, who: Mapping[str, Any]) -> Any:
        """Ask a human through the graph: ``interrupt`` raises now and returns the resume value on the re-run."""
        call = request.tool_call
        payload = {
            "type": "mcp_guard_approval",
            "tool": call["name"],
            "args": call["args"],
            "server": who["server"],
            "rule": decision.rule,
            "reason": decision.reason,
            "risk_class": decision.risk_class,
            "description": decision.approval_description,
            "tool_call_id": call.get("id"),
            "allowed_decisions": ["approve", "edit", "reject"],
        }
        return interrupt(payload)

    def _message(self, request: ToolCallRequest, decision: Decision) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(
            content=_violation_or_raise(self.guard, decision).to_json(),
            tool_call_id=call["id"],
            name=call["name"],
            status="error",
        )

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        call = request.tool_call
        who = self._who(request)
        approval: Any = None
        if self.approval == "interrupt":
            # check() reserves nothing: this code runs again when the graph resumes after the interrupt.
            try:
                decision = self.guard.check(call["name"], call["args"], **who)
            except Exception as exc:
                return self._message(request, _guard_failed(self.guard, call["name"], who["server"], exc))
            if decision.needs_approval:
                approval = self._pause(request, decision, who)
        called = False

        def run(**args: Any) -> ToolMessage | Command[Any]:
            nonlocal called
            called = True
            return handler(request.override(tool_call={**call, "args": args}))

        try:
            result = self.guard.run(call["name"], call["args"], run, approval=approval, **who)
        except Exception as exc:
            if called:
                raise
            return self._message(request, _guard_failed(self.guard, call["name"], who["server"], exc))
        if result.violation is not None:
            return self._message(request, result.violation)
        value: ToolMessage | Command[Any] = result.value
        return value

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        call = request.tool_call
        who = self._who(request)
        approval: Any = None
        if self.approval == "interrupt":
            try:
                decision = await self.guard.acheck(call["name"], call["args"], **who)
            except Exception as exc:
                return self._message(request, _guard_failed(self.guard, call["name"], who["server"], exc))
            if decision.needs_approval:
                approval = self._pause(request, decision, who)
        called = False

        async def run(**args: Any) -> ToolMessage | Command[Any]:
            nonlocal called
            called = True
            return await handler(request.override(tool_call={**call, "args": args}))

        try:
            result = await self.guard.arun(call["name"], call["args"], run, approval=approval, **who)
        except Exception as exc:
            if called:
                raise
            return self._message(request, _guard_failed(self.guard, call["name"], who["server"], exc))
        if result.violation is not None:
            return self._message(request, result.violation)
        value: ToolMessage | Command[Any] = result.value
        return value
