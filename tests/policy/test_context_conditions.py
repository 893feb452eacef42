"""``context.<path>`` and ``claims.<path>`` in conditions, and code ``identity_required`` (spec section 11).

The pure core first (what a path reads in a pydantic model, a dataclass, a dict; that nothing of a context
object is ever called; which refusals carry ``identity_required``), then real runs judged by what a real MCP
server recorded: LangChain's ``create_agent`` with a ``context_schema`` (``GuardMiddleware`` and
``GuardInterceptor``) and the Agents SDK's ``Runner.run(..., context=...)`` (``guard_mcp_server`` and
``guard_tools``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml
from agents import set_tracing_disabled
from agents.mcp import MCPServerStdio
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from pydantic import BaseModel, ConfigDict

from mcp_guard import Guard, MemorySink, Policy, PolicyError
from mcp_guard._cli.main import main
from mcp_guard.integrations.langchain import GuardInterceptor, GuardMiddleware
from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, unguard_mcp_server
from tests.support.agents_helpers import call as agents_call
from tests.support.agents_helpers import run, tool_outputs
from tests.support.agents_helpers import script as agents_script
from tests.support.agents_helpers import violation as agents_violation
from tests.support.langchain_helpers import RecordingSession, script, tool_messages, violation
from tests.support.marks import module_loop

set_tracing_disabled(True)


def _doc(**tools: Any) -> dict[str, Any]:
    return {"version": "1", "default": "allow", "tools": tools}


PLAN = Policy.from_dict(_doc(pay={"require": {"context.user.plan": {"eq": "pro"}}}))


# -- what a path reads ---------------------------------------------------------------------------------------


class UserModel(BaseModel):
    plan: str | None = None


class ContextModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    user: UserModel | None = None


@dataclasses.dataclass
class UserData:
    plan: str | None = None


@dataclasses.dataclass(slots=True)
class ContextSlots:
    user: UserData | None = None


class ContextDict(TypedDict):
    user: dict[str, Any]


class PlainObject:
    def __init__(self, plan: str) -> None:
        self.user = {"plan": plan}


SHAPES: dict[str, Any] = {
    "pydantic": lambda plan: ContextModel(user=UserModel(plan=plan)),
    "pydantic extra": lambda plan: ContextModel.model_validate({"user": {"plan": plan}, "org": 1}),
    "dataclass in slots dataclass": lambda plan: ContextSlots(UserData(plan)),
    "dict": lambda plan: {"user": {"plan": plan}},
    "TypedDict": lambda plan: ContextDict(user={"plan": plan}),
    "object": PlainObject,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_context_path_reads_models_dataclasses_and_dicts(shape: str) -> None:
    make = SHAPES[shape]
    assert PLAN.evaluate("pay", {}, context=make("pro")).allowed
    refused = PLAN.evaluate("pay", {}, context=make("free"))
    assert (refused.code, refused.reason) == ("requirement_failed", "context.user.plan is not equal to 'pro'")


def test_extra_fields_of_a_pydantic_context_are_read() -> None:
    policy = Policy.from_dict(_doc(pay={"require": {"context.org": {"eq": 1}}}))
    assert policy.evaluate("pay", {}, context=ContextModel.model_validate({"org": 1})).allowed
    assert policy.evaluate("pay", {}, context=ContextModel()).code == "identity_required"


class Booby:
    """A context whose every behaviour is a trap: a policy path must read data only."""

    def __init__(self) -> None:
        self.plan = "pro"
        self.calls: list[str] = []

    @property
    def tier(self) -> str:
        self.calls.append("tier")
        return "pro"

    def is_admin(self) -> bool:
        self.calls.append("is_admin")
        return True

    def __getattr__(self, name: str) -> Any:
        if name != "calls":
            self.calls.append(f"getattr:{name}")
        raise AttributeError(name)


@pytest.mark.parametrize("path", ["context.tier", "context.is_admin", "context.ghost", "context.__class__"])
def test_nothing_of_a_context_object_is_ever_called(path: str) -> None:
    policy = Policy.from_dict(
        _doc(pay={"require": {path: {"exists": True}}}, plain={"require": {"context.plan": {"eq": "pro"}}})
    )
    ctx = Booby()
    assert policy.evaluate("plain", {}, context=ctx).allowed
    refused = policy.evaluate("pay", {}, context=ctx)
    assert refused.code == "identity_required"  # read as missing: a property, a method, __getattr__ are not data
    assert ctx.calls == []


def test_a_path_through_a_scalar_is_the_strict_side_not_a_missing_value() -> None:
    # context.user is a string: the value exists but cannot be read, as an argument path would be refused.
    refused = PLAN.evaluate("pay", {}, context={"user": "alice"})
    assert refused.code == "requirement_failed"
    assert "not an object" in (refused.reason or "")


def test_claims_are_paths_into_the_decoded_json() -> None:
    policy = Policy.from_dict(
        _doc(
            pay={"require": {"claims.scope": {"contains": "payments"}}},
            org={"deny_if": {"claims.org.roles": {"contains": "suspended"}}},
            first={"require": {"claims.groups.0": {"eq": "admins"}}},
        )
    )
    assert policy.evaluate("pay", {}, claims={"scope": "read payments"}).allowed
    assert policy.evaluate("pay", {}, claims={"scope": "read"}).code == "requirement_failed"
    assert policy.evaluate("org", {}, claims={"org": {"roles": ["member"]}}).allowed
    assert policy.evaluate("org", {}, claims={"org": {"roles": ["suspended"]}}).code == "denied"
    assert policy.evaluate("first", {}, claims={"groups": ["admins", "x"]}).allowed
    assert policy.evaluate("first", {}, claims={"groups": []}).code == "identity_required"


# -- identity_required ----------------------------------------------------------------------------------------

MISSING_CASES = [
    # (rule, what the call carries, code)
    ({"require": {"identity": {"glob": "*@acme.com"}}}, {}, "identity_required"),
    ({"deny_if": {"identity": {"eq": "mallory"}}}, {}, "identity_required"),
    ({"approve_if": {"identity": {"neq": "root"}}}, {}, "identity_required"),
    ({"require": {"claims.scope": {"contains": "x"}}}, {}, "identity_required"),
    ({"require": {"claims.scope": {"contains": "x"}}}, {"claims": {"sub": "a"}}, "identity_required"),
    ({"deny_if": {"claims.plan": {"eq": "free"}}}, {"claims": {}}, "identity_required"),
    ({"deny_if": {"context.plan": {"eq": "free"}}}, {}, "identity_required"),
    ({"deny_if": {"context.plan": {"eq": "free"}}}, {"context": {"plan": None}}, "identity_required"),
    ({"approve_if": {"context.amount_cap": {"lt": 10}}}, {"context": {}}, "identity_required"),
    ({"require": {"identity": {"exists": True}}}, {}, "identity_required"),
    ({"deny_if": {"context.user": {"exists": False}}}, {"context": {}}, "identity_required"),
    # With the value present, the usual codes.
    ({"require": {"identity": {"glob": "*@acme.com"}}}, {"identity": "eve@evil.com"}, "requirement_failed"),
    ({"deny_if": {"context.plan": {"eq": "free"}}}, {"context": {"plan": "free"}}, "denied"),
]


@pytest.mark.parametrize(("rule", "call", "code"), MISSING_CASES)
def test_a_rule_that_reads_a_missing_caller_value_refuses_with_identity_required(
    rule: dict[str, Any], call: dict[str, Any], code: str
) -> None:
    policy = Policy.from_dict(_doc(pay=rule))
    decision = policy.evaluate("pay", {"amount": 1}, **call)
    assert (decision.action, decision.code) == ("deny", code)
    if code == "identity_required":
        payload = decision.to_payload()
        assert payload["code"] == "identity_required"
        assert "who is calling" in payload["hint"]


def test_present_values_pass_and_exists_false_in_approve_if_asks_as_written() -> None:
    policy = Policy.from_dict(
        _doc(
            pay={"deny_if": {"identity": {"eq": "mallory"}, "context.plan": {"eq": "free"}}},
            anon={"approve_if": {"identity": {"exists": False}}},
        )
    )
    assert policy.evaluate("pay", {}, identity="alice", context={"plan": "pro"}).allowed
    assert policy.evaluate("anon", {}, identity="alice").allowed
    held = policy.evaluate("anon", {})
    assert held.action == "require_approval"  # the author said what to do without an identity: ask a human


def test_argument_paths_keep_their_missing_semantics() -> None:
    # Only caller paths changed: an absent argument still never fires a deny_if.
    policy = Policy.from_dict(_doc(pay={"deny_if": {"args.amount": {"gt": 10}}}))
    assert policy.evaluate("pay", {}).allowed


@pytest.mark.parametrize("path", ["context", "claims", "context.", "claims..x", "ctx.user", "context.a..b"])
def test_malformed_caller_paths_are_refused_at_load(path: str) -> None:
    with pytest.raises(PolicyError, match="is not a condition path"):
        Policy.from_dict(_doc(pay={"require": {path: {"exists": True}}}))


def test_the_guard_passes_context_and_claims_to_every_entry_point() -> None:
    sink = MemorySink()
    guard = Guard(
        _doc(pay={"require": {"context.tenant": {"eq": "acme"}, "claims.scope": {"contains": "pay"}}}), audit=sink
    )
    ran: list[int] = []

    def pay(amount: int) -> str:
        ran.append(amount)
        return "paid"

    ok = {"context": {"tenant": "acme"}, "claims": {"scope": "pay read"}}
    assert guard.check("pay", {"amount": 1}, **ok).allowed
    assert guard.invoke("pay", {"amount": 1}, pay, **ok) == "paid"
    refused = guard.run("pay", {"amount": 2}, pay, context={"tenant": "acme"})
    assert refused.violation is not None
    assert refused.violation.code == "identity_required"
    admission = guard.admit("pay", {"amount": 3}, context={"tenant": "globex"}, claims=ok["claims"])
    assert admission.decision.code == "requirement_failed"
    guard.finish(admission, "denied")
    assert ran == [1]
    assert [e["code"] for e in sink.events if e["outcome"] == "denied"] == ["identity_required", "requirement_failed"]


# -- LangChain: create_agent with a context_schema, judged by the recording server ----------------------------


LC_POLICY = _doc(
    transfer={"require": {"context.tenant": {"eq": "acme"}}, "deny_if": {"context.plan": {"eq": "free"}}},
    get_balance={},
)


@dataclasses.dataclass
class AgentContext:
    user_id: str
    tenant: str | None = None
    plan: str | None = None


def _transfer_turns(nonce: str) -> AIMessage:
    return AIMessage(
        "", tool_calls=[{"name": "transfer", "args": {"amount": 5, "memo": nonce}, "id": "t1", "type": "tool_call"}]
    )


@module_loop
@pytest.mark.parametrize("adapter", ["middleware", "interceptor"])
async def test_langchain_runtime_context_drives_the_decision(recording_session: RecordingSession, adapter: str) -> None:
    sink = MemorySink()
    guard = Guard(LC_POLICY, audit=sink)
    if adapter == "middleware":
        tools, middleware = await recording_session.tools(), [GuardMiddleware(guard)]
    else:
        tools, middleware = await recording_session.tools(tool_interceptors=[GuardInterceptor(guard)]), []
    contexts = {
        "allowed": AgentContext("alice", tenant="acme", plan="pro"),
        "other tenant": AgentContext("bob", tenant="globex", plan="pro"),
        "free plan": AgentContext("carol", tenant="acme", plan="free"),
        "no tenant": AgentContext("dave", plan="pro"),
    }
    nonce = uuid.uuid4().hex
    results: dict[str, Any] = {}
    for label, context in contexts.items():
        agent = create_agent(
            script(_transfer_turns(f"{nonce} {label}")), tools, middleware=middleware, context_schema=AgentContext
        )
        state = await agent.ainvoke({"messages": [("user", "go")]}, context=context)
        (message,) = tool_messages(state["messages"])
        payload = violation(message)
        results[label] = payload["code"] if payload else message.status
    assert results == {
        "allowed": "success",
        "other tenant": "requirement_failed",
        "free plan": "denied",
        "no tenant": "identity_required",
    }
    ran = [r["args"]["memo"] for r in recording_session.record() if nonce in str(r["args"].get("memo"))]
    assert ran == [f"{nonce} allowed"]
    # The identity still comes from the context's user_id; the context object itself is not audited.
    assert [(e["identity"], e.get("code")) for e in sink.events] == [
        ("alice", None),
        ("bob", "requirement_failed"),
        ("carol", "denied"),
        ("dave", "identity_required"),
    ]
    assert all("context" not in e for e in sink.events)


@module_loop
async def test_langchain_configurable_is_not_the_context(recording_session: RecordingSession) -> None:
    # config["configurable"] carries run settings, not the caller: it must never satisfy a context.* rule.
    tools = await recording_session.tools()
    nonce = uuid.uuid4().hex
    agent = create_agent(script(_transfer_turns(nonce)), tools, middleware=[GuardMiddleware(LC_POLICY)])
    state = await agent.ainvoke(
        {"messages": [("user", "go")]}, config={"configurable": {"tenant": "acme", "plan": "pro", "user_id": "x"}}
    )
    (message,) = tool_messages(state["messages"])
    assert (violation(message) or {}).get("code") == "identity_required"
    assert [r for r in recording_session.record() if r["args"].get("memo") == nonce] == []


# -- Agents SDK: Runner.run(..., context=...), judged by the recording server ------------------------------------


class RunContext(BaseModel):
    user_id: str
    tenant: str | None = None
    plan: str | None = None


@module_loop
async def test_agents_run_context_drives_the_decision(
    agents_recording_server: MCPServerStdio, agents_record: Path
) -> None:
    from tests.support.servers.recording_server import read_record

    guard_mcp_server(agents_recording_server, Guard(LC_POLICY))
    try:
        nonce = uuid.uuid4().hex
        contexts: dict[str, Any] = {
            "allowed": RunContext(user_id="alice", tenant="acme", plan="pro"),
            "dict allowed": {"user_id": "erin", "tenant": "acme", "plan": "team"},
            "other tenant": RunContext(user_id="bob", tenant="globex"),
            "free plan": RunContext(user_id="carol", tenant="acme", plan="free"),
            "no tenant": RunContext(user_id="dave"),
            "no context": None,
        }
        results: dict[str, Any] = {}
        for label, context in contexts.items():
            model = agents_script(agents_call("transfer", {"amount": 5, "memo": f"{nonce} {label}"}, "c1"))
            await run(model, mcp_servers=[agents_recording_server], context=context)
            output = tool_outputs(model)["c1"]
            payload = agents_violation(output)
            results[label] = payload["code"] if payload else output
        assert results == {
            "allowed": "moved 5",
            "dict allowed": "moved 5",
            "other tenant": "requirement_failed",
            "free plan": "denied",
            "no tenant": "identity_required",
            "no context": "identity_required",
        }
        ran = [r["args"]["memo"] for r in read_record(agents_record) if nonce in str(r["args"].get("memo"))]
        assert ran == [f"{nonce} allowed", f"{nonce} dict allowed"]
    finally:
        unguard_mcp_server(agents_recording_server)


@module_loop
async def test_agents_function_tools_read_the_run_context() -> None:
    from agents import function_tool

    ran: list[str] = []

    @function_tool
    def refund(order: str) -> str:
        """Refund an order."""
        ran.append(order)
        return f"refunded {order}"

    (guarded,) = guard_tools([refund], _doc(refund={"require": {"context.role": {"in": ["support", "admin"]}}}))
    outcomes = []
    for context in ({"role": "support"}, {"role": "guest"}, {}):
        model = agents_script(agents_call("refund", {"order": f"o-{len(outcomes)}"}, "r1"))
        await run(model, tools=[guarded], context=context)
        payload = agents_violation(tool_outputs(model)["r1"])
        outcomes.append(payload["code"] if payload else "ok")
    assert outcomes == ["ok", "requirement_failed", "identity_required"]
    assert ran == ["o-0"]


# -- the CLI: policy tests and explain take a context and claims -----------------------------------------------


def test_policy_tests_and_explain_take_context_and_claims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(_doc(pay={"require": {"context.tenant": {"eq": "acme"}, "claims.scope": {"contains": "pay"}}}))
    )
    cases = [
        {
            "name": "ok",
            "tool": "pay",
            "context": {"tenant": "acme"},
            "claims": {"scope": "pay"},
            "expect": {"action": "allow"},
        },
        {
            "name": "tenant",
            "tool": "pay",
            "context": {"tenant": "x"},
            "claims": {"scope": "pay"},
            "expect": {"code": "requirement_failed"},
        },
        {"name": "no token", "tool": "pay", "context": {"tenant": "acme"}, "expect": {"code": "identity_required"}},
    ]
    suite = tmp_path / "cases.yaml"
    suite.write_text(yaml.safe_dump({"policy": str(policy), "cases": cases}))
    assert main(["test", str(suite)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    explain = ["explain", str(policy), "--tool", "pay", "--json", "--context", '{"tenant": "acme"}']
    assert main([*explain, "--claims", '{"scope": "pay"}']) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "allow"
    assert main(explain) == 3  # refused: no claims
    assert json.loads(capsys.readouterr().out)["code"] == "identity_required"
