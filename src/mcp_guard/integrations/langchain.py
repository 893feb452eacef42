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

from mcp_guard._compat import error_result
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
    who, sess, _ = _caller(identity, session, runtime=runtime, config=config)
    return who, sess


def _caller(
    identity: WhoOption, session: WhoOption, *, runtime: Any = None, config: Any = None
) -> tuple[str | None, str | None, str | None]:
    """:func:`resolve_caller` plus the run id: LangGraph's ``configurable.thread_id`` (None outside a graph)."""
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

    thread = configurable.get("thread_id")
    if session is None:
        sess = thread
        if sess is None:
            sess = _field(context, "session_id")
    elif callable(session):
        sess = session(runtime if runtime is not None else config)
    else:
        sess = session
    return (
        (None if who is None else str(who)),
        (None if sess is None else str(sess)),
        (None if thread is None else str(thread)),
    )


def _server_for(server: ServerOption, tool: str) -> str | None:
    if server is None or isinstance(server, str):
        return server
    return server.get(tool)


def _annotations(tool: BaseTool | None) -> Mapping[str, Any] | None:
    # langchain-mcp-adapters puts the MCP ToolAnnotations dump (readOnlyHint, destructiveHint, ...) in metadata.
    metadata = getattr(tool, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else None


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
    if tool is None:
        return None
    schema = getattr(tool, "args_schema", None)
    if isinstance(schema, Mapping):
        return schema
    if not isinstance(tool, StructuredTool) or schema is None:
        return None  # a single-input Tool: the model sends one string, there is nothing to check against
    try:
        return tool.tool_call_schema
    except Exception:  # a schema LangChain cannot build: the Guard still checks what it can
        log.warning("no usable argument schema for tool %s", tool.name)
        return None


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

    __slots__ = ("annotations", "guard", "identity", "injected", "name", "schema", "server", "session")

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
        self.schema = _tool_schema(tool)
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

    def context(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """The Guard's keyword arguments for one call: who, where, the schema, and the framework's ids."""
        runtime = extra.get("runtime")
        identity, session, run_id = _caller(self.identity, self.session, runtime=runtime)
        return {
            "server": self.server,
            "identity": identity,
            "session": session,
            "annotations": self.annotations,
            "tool_schema": self.schema,
            "call_id": getattr(runtime, "tool_call_id", None),
            "run_id": run_id,
        }


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
    guard, name, server = spec.guard, spec.name, spec.server

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        call_args, extra = spec.split(args, kwargs)
        context = spec.context(extra)
        called = False

        async def call(**edited: Any) -> Any:
            nonlocal called
            called = True
            if args:
                pos, named = _positional(args, edited)
                return await original(*pos, **named, **extra)
            return await original(**edited, **extra)

        try:
            result: GuardResult = await guard.arun(name, call_args, call, **context)
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
    guard, name, server = spec.guard, spec.name, spec.server

    def guarded(*args: Any, **kwargs: Any) -> Any:
        call_args, extra = spec.split(args, kwargs)
        context = spec.context(extra)
        called = False

        def call(**edited: Any) -> Any:
            nonlocal called
            called = True
            if args:
                pos, named = _positional(args, edited)
                return original(*pos, **named, **extra)
            return original(**edited, **extra)

        try:
            result: GuardResult = guard.run(name, call_args, call, **context)
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
        tool_server = _server_for(server, tool.name) or _mcp_server_of(tool)
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

    Uses the request's ``server_name``, so server-qualified rules apply. A refused call returns an MCP error
    result with the violation JSON and never reaches the server. It cannot hide tools from the model (it only
    sees calls): use :func:`wrap_tools` or :class:`GuardMiddleware` for that.

    The tool's input schema (checked strictly before the policy, spec section 8) is not part of an
    interceptor request. Inside ``create_agent`` it is found in the tool list of the call's ``ToolRuntime``;
    elsewhere pass the loaded tools once with :meth:`learn` (``interceptor.learn(await client.get_tools())``),
    or ``schemas={"tool": input_schema}``. A call whose schema is unknown is checked by the policy alone.
    """

    def __init__(
        self,
        policy_or_guard: PolicySource,
        *,
        approver: Any = None,
        identity: WhoOption = None,
        session: WhoOption = None,
        schemas: Mapping[str, Any] | None = None,
        **guard_options: Any,
    ) -> None:
        if approver is not None:
            guard_options["approver"] = approver
        self.guard = as_guard(policy_or_guard, **guard_options)
        self.identity = identity
        self.session = session
        self._schemas: dict[str, Any] = dict(schemas or {})
        self._annotations: dict[str, Mapping[str, Any] | None] = {}
        require_extra("mcp.types", "langchain", "GuardInterceptor")

    def learn(self, tools: Sequence[BaseTool]) -> GuardInterceptor:
        """Remember the input schema and annotations of ``tools`` (loaded by langchain-mcp-adapters); returns self."""
        for tool in tools:
            self._schemas[tool.name] = _tool_schema(tool)
            self._annotations[tool.name] = _annotations(tool)
        return self

    def _refusal(self, decision: Decision) -> CallToolResult:
        result: CallToolResult = error_result(_violation_or_raise(self.guard, decision).to_json())
        return result

    def _tool_facts(self, runtime: Any, name: str, server: str | None) -> tuple[Any, Mapping[str, Any] | None]:
        # The interceptor request carries no tool metadata; inside an agent the ToolRuntime lists the tools.
        tool = _runtime_tool(runtime, name, server)
        if tool is not None:
            return _tool_schema(tool), _annotations(tool)
        return self._schemas.get(name), self._annotations.get(name)

    async def __call__(
        self,
        request: MCPToolCallRequest,
        handler: Callable[[MCPToolCallRequest], Awaitable[Any]],
    ) -> Any:
        # langchain-mcp-adapters says "unknown" when it was not given a server name.
        server = request.server_name if request.server_name != "unknown" else None
        runtime = request.runtime
        identity, session, run_id = _caller(self.identity, self.session, runtime=runtime)
        schema, annotations = self._tool_facts(runtime, request.name, server)
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
                annotations=annotations,
                tool_schema=schema,
                call_id=getattr(runtime, "tool_call_id", None),
                run_id=run_id,
            )
        except Exception as exc:
            if called:
                raise
            return self._refusal(_guard_failed(self.guard, request.name, server, exc))
        if result.violation is not None:
            return self._refusal(result.violation)
        return result.value


def _runtime_tool(runtime: Any, name: str, server: str | None) -> BaseTool | None:
    for tool in getattr(runtime, "tools", None) or ():
        if tool.name == name or (server is not None and tool.name == f"{server}_{name}"):
            found: BaseTool = tool
            return found
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
        self._schemas: dict[int, tuple[BaseTool, Any]] = {}
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
            or guard.exposes(
                t.name, server=_server_for(self.server, t.name) or _mcp_server_of(t), annotations=_annotations(t)
            )
        ]
        return request if len(tools) == len(request.tools) else request.override(tools=tools)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        return handler(self._visible(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        return await handler(self._visible(request))

    # -- tool calls -------------------------------------------------------------------------------------

    def _schema_of(self, tool: BaseTool | None) -> Any:
        if tool is None:
            return None
        entry = self._schemas.get(id(tool))
        if entry is None or entry[0] is not tool:
            entry = (tool, _tool_schema(tool))  # holding the tool keeps its id from being reused
            if len(self._schemas) >= _SCHEMA_CACHE:
                self._schemas.clear()
            self._schemas[id(tool)] = entry
        return entry[1]

    def _who(self, request: ToolCallRequest) -> dict[str, Any]:
        call = request.tool_call
        identity, session, run_id = _caller(self.identity, self.session, runtime=request.runtime)
        return {
            "server": _server_for(self.server, call["name"]) or _mcp_server_of(request.tool),
            "identity": identity,
            "session": session,
            "annotations": _annotations(request.tool),
            "tool_schema": self._schema_of(request.tool),
            "call_id": call.get("id"),
            "run_id": run_id,
        }

    def _pause(self, request: ToolCallRequest, decision: Decision, who: Mapping[str, Any]) -> Any:
        """Ask a human through the graph, in LangChain's HumanInTheLoop ``per_call`` shape.

        The interrupt's value is a ``ToolApprovalRequest`` (``type: "tool_approval"``) and its
        ``response_schema`` the decisions a reviewer may send (approve, edit with this tool's argument schema,
        reject). ``interrupt`` raises now and returns the resume value when the graph runs this node again.
        """
        call = request.tool_call
        value = {
            "type": "tool_approval",
            "tool_call_id": call.get("id"),
            "name": call["name"],
            "args": call["args"],
            "description": decision.approval_description or decision.reason or f"{call['name']} needs approval",
            # What LangChain's request does not carry, for reviewers that want it (ignored by the others).
            "mcp_guard": {
                "server": who["server"],
                "identity": who["identity"],
                "session": who["session"],
                "rule": decision.rule,
                "reason": decision.reason,
                "risk_class": decision.risk_class,
            },
        }
        return interrupt(value, response_schema=_response_schema(call["name"], who["tool_schema"]))

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
            # check() reserves nothing: this code runs again when the graph resumes after the interrupt, so the
            # budget is checked when pausing and again on resume (and reserved only by run() below).
            try:
                decision = self.guard.check(call["name"], call["args"], **who)
            except Exception as exc:
                return self._message(request, _guard_failed(self.guard, call["name"], who["server"], exc))
            if decision.needs_approval:
                approval = _resume_answer(self._pause(request, decision, who), call["name"])
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
                approval = _resume_answer(self._pause(request, decision, who), call["name"])
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


_SCHEMA_CACHE = 1024


def _response_schema(tool: str, args_schema: Any) -> dict[str, Any]:
    """The JSON Schema of the answers a reviewer may send (LangChain's ``Decision`` types for this tool).

    A dict, not a type: LangGraph then publishes it to clients without validating the resume value, so the
    0.1 resume values and a batched ``HITLResponse`` are still accepted (:func:`_resume_answer` reads them).
    """
    if isinstance(args_schema, Mapping):
        args: Any = dict(args_schema)
    else:
        try:
            args = args_schema.model_json_schema() if args_schema is not None else {"type": "object"}
        except Exception:
            args = {"type": "object"}
    return {
        "oneOf": [
            {
                "type": "object",
                "title": "ApproveDecision",
                "properties": {"type": {"const": "approve"}},
                "required": ["type"],
            },
            {
                "type": "object",
                "title": "EditDecision",
                "properties": {
                    "type": {"const": "edit"},
                    "edited_action": {
                        "type": "object",
                        "properties": {"name": {"const": tool}, "args": args},
                        "required": ["name", "args"],
                    },
                },
                "required": ["type", "edited_action"],
            },
            {
                "type": "object",
                "title": "RejectDecision",
                "properties": {"type": {"const": "reject"}, "message": {"type": "string"}},
                "required": ["type"],
            },
        ]
    }


def _resume_answer(value: Any, tool: str) -> Any:
    """A resume value as the Guard's approval answer; what cannot be read becomes a refusal.

    Accepted: one LangChain ``Decision`` (``approve``; ``edit`` with ``edited_action {name, args}``; ``reject``
    with an optional ``message``), a batched ``HITLResponse`` holding exactly one decision, and the 0.1 values
    (``{"type": "edit", "args": ...}``, ``True`` / ``False``). An edit that names another tool is refused: a
    reviewer cannot switch tools. Edited arguments are evaluated again by the Guard.
    """
    if isinstance(value, Mapping) and "decisions" in value and "type" not in value:
        decisions = value.get("decisions")
        if not isinstance(decisions, Sequence) or isinstance(decisions, str) or len(decisions) != 1:
            return {"type": "reject", "message": "the approval answer was not understood (one decision expected)"}
        value = decisions[0]
    if isinstance(value, Mapping) and value.get("type") == "edit":
        edited = value.get("edited_action")
        if isinstance(edited, Mapping) and edited.get("name", tool) != tool:
            return {"type": "reject", "message": "an edit cannot switch to another tool"}
    if isinstance(value, Mapping) and value.get("type") == "respond":
        return {"type": "reject", "message": "a human answered in place of the tool; the call was not made"}
    return value
