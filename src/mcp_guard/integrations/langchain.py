"""LangChain adapters: a tool wrapper, an MCP interceptor and agent middleware around one :class:`~mcp_guard.Guard`.

Three places to put the same policy; pick one per tool (stacking them charges rate limits twice):

* :func:`wrap_tools` wraps the tools themselves (plain LangChain tools or those ``langchain-mcp-adapters`` loads);
  tools the policy hides or denies outright are left out of what the model is shown.
* :class:`GuardInterceptor` sits inside ``langchain-mcp-adapters`` (``tool_interceptors=[...]``) and knows the
  MCP server's name, so server-qualified rules (``github/create_issue``) apply; it cannot hide tools.
* :class:`GuardMiddleware` sits in ``create_agent(middleware=[...])`` and can pause the graph for a human
  (``approval="interrupt"``) with LangGraph's ``interrupt``.

The adapters hold no policy logic: they translate a framework call into ``Guard.arun`` / ``Guard.run`` and the
:class:`~mcp_guard.Decision` back (through ``Guard.violation``, which applies ``on_violation``) into what the
framework shows the model: an error ``ToolMessage`` (or an MCP ``isError`` result) whose text is the violation
JSON. Nothing here ends an agent run, unless the guard was built
with ``on_violation="raise"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mcp_guard._compat import error_result
from mcp_guard._errors import require_extra
from mcp_guard._guard.guard import Guard, GuardResult, PolicySource, as_guard
from mcp_guard._policy.decision import Decision
from mcp_guard.integrations._adapt import approval_request, response_schema, resume_answer

_FEATURE = "mcp_guard.integrations.langchain"

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse, ToolCallRequest
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import BaseTool, StructuredTool, Tool
    from langgraph.types import Command, interrupt

    from mcp_guard.integrations._langchain_tools import (
        ServerOption,
        UserInputs,
        WhoOption,
        _annotations,
        _error_handler,
        _guarded,
        _listed,
        _mcp_server_of,
        _server_for,
        _tool_schema,
        _ToolSpec,
        _who,
        state_messages,
    )
except ImportError as exc:  # name the extra to install, not the first module that happened to be missing
    require_extra(exc.name or "langchain", "langchain", _FEATURE)
    raise

if TYPE_CHECKING:
    from langchain_mcp_adapters.interceptors import MCPToolCallRequest

__all__ = ["GuardInterceptor", "GuardMiddleware", "resolve_caller", "wrap_tools"]


def resolve_caller(
    identity: WhoOption = None, session: WhoOption = None, *, runtime: Any = None, config: Any = None
) -> tuple[str | None, str | None]:
    """The (identity, session) of a call, as all three adapters find them.

    Defaults: identity is the runtime context's ``user_id`` (dict key or attribute), then its ``identity``, then
    ``configurable.user_id``; session is ``configurable.thread_id``, then the context's ``session_id``. A string
    option is used as is; a callable gets the ``ToolRuntime`` (or the ``RunnableConfig`` when there is none) and
    its answer is used even when it is ``None``. ``config`` defaults to the runtime's, else LangChain's current one.
    """
    who = _who(identity, session, runtime=runtime, config=config)
    return who["identity"], who["session"]


# -- wrap_tools -----------------------------------------------------------------------------------------


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
    guard = _as_guard(policy_or_guard, approver, guard_options)
    inputs = UserInputs(guard)  # shared by the copies: each user message is remembered once
    wrapped: list[BaseTool] = []
    for tool in tools:
        if not isinstance(tool, (StructuredTool, Tool)):
            raise TypeError(
                f"wrap_tools cannot wrap {type(tool).__name__} {tool.name!r}: only StructuredTool and Tool; "
                "use GuardMiddleware for other tools"
            )
        tool_server = _server_for(server, tool.name) or _mcp_server_of(tool)
        if not _listed(guard, tool, tool_server) and hide_denied:  # listed first: pins see every listing
            continue
        spec = _ToolSpec(tool, guard, identity, session, tool_server, inputs)
        update: dict[str, Any] = {"handle_tool_error": _error_handler(tool.handle_tool_error)}
        if tool.coroutine is not None:
            update["coroutine"] = _guarded(tool.coroutine, spec, is_async=True)
        if tool.func is not None:
            update["func"] = _guarded(tool.func, spec, is_async=False)
        wrapped.append(tool.model_copy(update=update))
    return wrapped


def _as_guard(policy_or_guard: PolicySource, approver: Any, guard_options: dict[str, Any]) -> Guard:
    if approver is not None:
        guard_options["approver"] = approver
    return as_guard(policy_or_guard, **guard_options)


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
        self.guard = _as_guard(policy_or_guard, approver, guard_options)
        self.identity = identity
        self.session = session
        self._schemas: dict[str, Any] = dict(schemas or {})
        self._annotations: dict[str, Mapping[str, Any] | None] = {}
        self._inputs = UserInputs(self.guard)
        require_extra("mcp.types", "langchain", "GuardInterceptor")

    def learn(self, tools: Sequence[BaseTool]) -> GuardInterceptor:
        """Remember the input schema and annotations of ``tools`` (loaded by langchain-mcp-adapters); returns self."""
        for tool in tools:
            self._schemas[tool.name] = _tool_schema(tool)
            self._annotations[tool.name] = _annotations(tool)
            _listed(self.guard, tool, _mcp_server_of(tool))  # a listing: compared with the policy's pins
        return self

    async def __call__(
        self, request: MCPToolCallRequest, handler: Callable[[MCPToolCallRequest], Awaitable[Any]]
    ) -> Any:
        # langchain-mcp-adapters says "unknown" when it was not given a server name.
        server = request.server_name if request.server_name != "unknown" else None
        runtime, name = request.runtime, request.name
        # The request carries no tool metadata; inside an agent the ToolRuntime lists the tools.
        names = (name, f"{server}_{name}") if server is not None else (name,)
        tool = next((t for t in getattr(runtime, "tools", None) or () if t.name in names), None)
        if tool is not None:
            schema, annotations = _tool_schema(tool), _annotations(tool)
        else:
            schema, annotations = self._schemas.get(name), self._annotations.get(name)
        who = _who(self.identity, self.session, runtime=runtime)
        # Inside an agent the ToolRuntime holds the conversation: the user's messages go to session memory.
        await self._inputs.aobserve(state_messages(runtime), who["session"])
        result = await self.guard.arun(
            name,
            request.args,
            lambda **args: handler(request.override(args=args)),
            server=server,
            annotations=annotations,
            tool_schema=schema,
            **who,
        )
        if result.violation is not None:
            return error_result(self.guard.violation(result.violation).to_json())
        return result.value


# -- GuardMiddleware ------------------------------------------------------------------------------------

_middleware_ids = itertools.count(1)
_SCHEMA_CACHE = 1024


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
        self.guard = _as_guard(policy_or_guard, approver, guard_options)
        self.approval = approval
        self.identity = identity
        self.session = session
        self.server = server
        self.hide_denied = hide_denied
        self._schemas: dict[int, tuple[BaseTool, Any]] = {}
        self._inputs = UserInputs(self.guard)
        # create_agent refuses two middleware with one name: number the instances.
        self._name = name or f"GuardMiddleware_{next(_middleware_ids)}"

    @property
    def name(self) -> str:
        return self._name

    def _visible(self, request: ModelRequest) -> ModelRequest:
        server, guard = self.server, self.guard
        if not self.hide_denied:
            if guard.pinning:  # the tools the model is shown are a listing: compare them with the pins
                for t in request.tools:
                    if isinstance(t, BaseTool):
                        _listed(guard, t, _server_for(server, t.name) or _mcp_server_of(t))
            return request
        tools = [
            t
            for t in request.tools
            if not isinstance(t, BaseTool) or _listed(guard, t, _server_for(server, t.name) or _mcp_server_of(t))
        ]
        return request if len(tools) == len(request.tools) else request.override(tools=tools)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        # The user's messages reach session memory before the model can turn them into calls.
        self._inputs.observe(request.messages, self._session_of(request.runtime))
        return handler(self._visible(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        await self._inputs.aobserve(request.messages, self._session_of(request.runtime))
        return await handler(self._visible(request))

    def _session_of(self, runtime: Any) -> str | None:
        if "texts" not in self.guard.policy.session_reads:
            return None  # nothing reads the user's requests: skip the lookup
        session: str | None = _who(self.identity, self.session, runtime=runtime)["session"]
        return session

    def _context(self, request: ToolCallRequest) -> dict[str, Any]:
        """The Guard's keyword arguments for this call (the tool's schema computed once per tool object)."""
        tool, call = request.tool, request.tool_call
        entry = self._schemas.get(id(tool)) if tool is not None else (None, None)
        if tool is not None and (entry is None or entry[0] is not tool):
            entry = (tool, _tool_schema(tool))  # holding the tool keeps its id from being reused
            if len(self._schemas) >= _SCHEMA_CACHE:
                self._schemas.clear()
            self._schemas[id(tool)] = entry
        return {
            **_who(self.identity, self.session, runtime=request.runtime),
            "server": _server_for(self.server, call["name"]) or _mcp_server_of(tool),
            "annotations": _annotations(tool),
            "tool_schema": entry[1] if entry is not None else None,
            "call_id": call.get("id"),
        }

    def _may_pause(self, tool: str, who: Mapping[str, Any]) -> bool:
        """Whether this call may pause the graph: only then is it checked before the run (which checks again)."""
        return self.approval == "interrupt" and self.guard.policy.may_require_approval(
            tool, server=who["server"], annotations=who["annotations"]
        )

    def _pause(self, request: ToolCallRequest, decision: Decision, who: Mapping[str, Any]) -> Any:
        """Ask a human through the graph, in LangChain's HumanInTheLoop ``per_call`` shape; None when the call
        needs no approval.

        The interrupt's value is a ``ToolApprovalRequest`` (``type: "tool_approval"``) and its
        ``response_schema`` the decisions a reviewer may send (approve, edit with this tool's argument schema,
        reject). ``interrupt`` raises now and returns the resume value when the graph runs this node again, so
        the budget is checked when pausing and again on resume, and reserved only by ``Guard.run`` after it.
        """
        if not decision.needs_approval:
            return None
        call = request.tool_call
        value = approval_request(call.get("id"), call["name"], call["args"], decision, who)
        return resume_answer(
            interrupt(value, response_schema=response_schema(call["name"], who["tool_schema"])), call["name"]
        )

    def _reply(self, request: ToolCallRequest, result: GuardResult) -> ToolMessage | Command[Any]:
        if result.violation is None:
            value: ToolMessage | Command[Any] = result.value
            return value
        call = request.tool_call
        content = self.guard.violation(result.violation).to_json()
        return ToolMessage(content=content, tool_call_id=call["id"], name=call["name"], status="error")

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]]
    ) -> ToolMessage | Command[Any]:
        call, who = request.tool_call, self._context(request)
        self._inputs.observe(state_messages(request), who["session"])
        approval = None
        if self._may_pause(call["name"], who):
            approval = self._pause(request, self.guard.check(call["name"], call["args"], **who), who)
        run = lambda **args: handler(request.override(tool_call={**call, "args": args}))  # noqa: E731
        return self._reply(request, self.guard.run(call["name"], call["args"], run, approval=approval, **who))

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]
    ) -> ToolMessage | Command[Any]:
        call, who = request.tool_call, self._context(request)
        await self._inputs.aobserve(state_messages(request), who["session"])
        approval = None
        if self._may_pause(call["name"], who):
            approval = self._pause(request, await self.guard.acheck(call["name"], call["args"], **who), who)
        run = lambda **args: handler(request.override(tool_call={**call, "args": args}))  # noqa: E731
        return self._reply(request, await self.guard.arun(call["name"], call["args"], run, approval=approval, **who))
