"""Build the example notebooks (examples/0*.ipynb) from the cells written out below.

The notebooks are generated so they stay reviewable as plain Python in a diff: edit this file, then run
``python examples/_build_notebooks.py`` and commit both. The .ipynb files are written without outputs;
``tests/test_notebooks.py`` executes every one of them and checks they match this file.

Every notebook asserts what it shows (the ``assert`` lines in its cells), so running one is also a test.
With ``OPENAI_API_KEY`` set, the model-driven parts ask a real model; the exact-sequence checks then give way
to checks that hold whatever the model chose to do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", dedent(text).strip("\n"))


def code(text: str) -> Cell:
    return ("code", dedent(text).strip("\n"))


# -- 01: quick start, LangChain ---------------------------------------------------------------------------

QUICKSTART_LANGCHAIN: list[Cell] = [
    md(
        """
        # Quick start: one policy around a LangChain agent's tools

        A payments assistant has three tools: read a price, send a payment, drop a database. We do not want it
        to drop databases, send more than 100 USD at once, or send more than three payments a minute.
        `wrap_tools` puts a policy around the tools; the agent and the model stay as they are.

        The model here is scripted (it makes a fixed list of calls) so the outputs can be checked. With
        `OPENAI_API_KEY` set and `langchain-openai` installed, a real model chooses the calls instead.
        """
    ),
    code(
        """
        import json

        from langchain.agents import create_agent
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import tool

        from mcp_guard import Guard, MemorySink, Policy
        from mcp_guard.integrations.langchain import wrap_tools
        from _scripted import langchain_model, tool_call


        @tool
        def get_price(symbol: str) -> float:
            \"\"\"Last price of a symbol such as BTCUSD.\"\"\"
            return {"BTCUSD": 64000.0, "ETHUSD": 3200.0}[symbol]


        @tool
        def send_payment(to: str, amount: int) -> str:
            \"\"\"Send `amount` US dollars to `to`.\"\"\"
            return f"sent {amount} USD to {to}"


        @tool
        def drop_database(name: str) -> str:
            \"\"\"Delete a database. Cannot be undone.\"\"\"
            return f"dropped {name}"
        """
    ),
    md(
        """
        ## The policy

        Default deny: a tool with no rule cannot be called. `drop_database` is hidden: the model is never shown
        it. `send_payment` is allowed under two conditions: `deny_if` refuses amounts over 100, and
        `rate_limit` allows three calls a minute per caller identity (here `alice`).
        """
    ),
    code(
        """
        policy = Policy.from_dict(
            {
                "version": "1",
                "default": "deny",
                "hide": ["drop_database"],
                "tools": {
                    "get_price": {},
                    "send_payment": {
                        "deny_if": {"args.amount": {"gt": 100}},
                        "reason": "Payments over 100 USD need a person, not an agent.",
                        "rate_limit": "3/minute",
                    },
                },
            }
        )
        audit = MemorySink()  # keeps audit events in a list; use audit="audit.jsonl" for a file
        guard = Guard(policy, audit=audit)
        tools = wrap_tools([get_price, send_payment, drop_database], guard, identity="alice")

        print("the model is shown:", [t.name for t in tools])
        assert [t.name for t in tools] == ["get_price", "send_payment"]
        """
    ),
    md(
        """
        ## The agent

        The script asks for a price, then six payments. Watch what comes back for each.
        """
    ),
    code(
        """
        script = [
            tool_call("get_price", {"symbol": "BTCUSD"}),
            tool_call("send_payment", {"to": "bob", "amount": 50}),
            tool_call("send_payment", {"to": "mallory", "amount": 5000}),
            tool_call("send_payment", {"to": "carol", "amount": 20}),
            tool_call("send_payment", {"to": "dave", "amount": 10}),
            tool_call("send_payment", {"to": "erin", "amount": 10}),
            "Paid bob, carol and dave. The 5,000 USD payment and the payment to erin were refused.",
        ]
        model, label = langchain_model(script)
        SCRIPTED = label == "scripted"
        agent = create_agent(model, tools)
        result = agent.invoke(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "Check the BTC price, then pay bob 50, mallory 5000, carol 20, dave 10 and erin 10 "
                        "USD, one payment at a time.",
                    }
                ]
            }
        )
        replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        print(f"model: {label}\\n")
        for m in replies:
            print(f"{m.name:13} {m.status:8} {m.content[:110]}")
        """
    ),
    md(
        """
        Refused calls did not raise and did not end the run: each came back to the model as an error
        `ToolMessage` whose text is a small JSON object, with a `code`, the `rule` that decided, a `reason`,
        and a `hint` telling the model what to do next.
        """
    ),
    code(
        """
        refusals = [json.loads(m.content) for m in replies if m.status == "error"]
        assert all(r["error"] == "policy_violation" for r in refusals)
        assert all(m.name != "drop_database" for m in replies)
        if SCRIPTED:
            assert [m.status for m in replies] == ["success", "success", "error", "success", "success", "error"]
            denied, limited = refusals
            assert denied["code"] == "denied"
            assert denied["rule"] == "/tools/send_payment/deny_if/args.amount-gt"
            assert denied["reason"] == "deny_if args.amount > 100"
            # The refused 5,000 USD payment used no quota: bob, carol and dave are the three of this minute.
            assert limited["code"] == "rate_limited"
            assert 0 < limited["retry_after_s"] <= 60
        print(json.dumps(refusals[-1], indent=2))
        """
    ),
    md(
        """
        ## The audit log

        One event per call, whatever happened. Argument values are never written in clear: each is described
        by its type and size (plus an HMAC fingerprint when the deployment sets `audit_key`), or reads
        `[redacted]` for paths a rule lists under `redact`, so the log can be shared.
        """
    ),
    code(
        """
        for e in audit.events:
            print(f"{e['tool']:13} {e['decision']:6} {str(e['code']):13} {e['outcome']:7} {e['args']}")

        assert len(audit.events) == len(replies)
        assert all("type" in v for e in audit.events for v in e["args"].values())
        if SCRIPTED:
            assert [e["code"] for e in audit.events] == [None, None, "denied", None, None, "rate_limited"]
        """
    ),
]


# -- 02: the Agents SDK with a guarded MCP server ----------------------------------------------------------

AGENTS_MCP: list[Cell] = [
    md(
        """
        # The OpenAI Agents SDK: a guarded MCP server

        The demo exchange server (`servers/exchange_server.py`) has read tools, trading tools, withdrawals and
        an API-key deletion. `guard_mcp_server` puts the example policy (`policies/exchange.json`) on the
        server object itself: the agent, the model and the server code do not change.

        Scripted model by default; with `OPENAI_API_KEY` set, the SDK's default OpenAI model decides the calls.
        """
    ),
    code(
        """
        import json

        from agents import Agent, RunContextWrapper, Runner
        from agents.items import ToolCallItem, ToolCallOutputItem
        from agents.mcp import MCPServerStdio

        from mcp_guard import Guard, MemorySink, Policy
        from mcp_guard.integrations.openai_agents import guard_mcp_server
        from _scripted import EXCHANGE_POLICY, agent_kwargs, agents_model, exchange_stdio

        policy = Policy.load(EXCHANGE_POLICY)
        audit = MemorySink()
        guard = Guard(policy, audit=audit)
        server = guard_mcp_server(
            MCPServerStdio(params=exchange_stdio(), name="exchange", cache_tools_list=True), guard
        )
        await server.connect()
        print(policy.name, policy.hash)
        """
    ),
    md(
        """
        ## What the model is shown

        The policy hides `delete_api_key`, so the server's tool list, as the agent sees it, leaves it out.
        """
    ),
    code(
        """
        calls = [
            ("get_balance", {}),
            ("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
            ("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 2000}),
            ("withdraw", {"asset": "USD", "amount": 500, "address": "0x" + "ab" * 20}),
        ]
        model, label = agents_model(calls, final="Bought 2,000 USD of BTC and withdrew 500 USD.")
        SCRIPTED = label == "scripted"
        agent = Agent(
            name="trader",
            instructions="You operate a crypto exchange account with the tools you have.",
            mcp_servers=[server],
            **agent_kwargs(model),
        )
        shown = [t.name for t in await agent.get_mcp_tools(RunContextWrapper(context=None))]
        print(shown)
        assert "delete_api_key" not in shown
        assert {"get_balance", "place_order", "withdraw"} <= set(shown)
        """
    ),
    md(
        """
        ## A run

        Who is calling comes from the run context (`user_id`, `session_id`), so per-identity limits and
        `identity` conditions apply to the right person.
        """
    ),
    code(
        """
        result = await Runner.run(
            agent,
            "Show my balance, buy 7,500 USD of BTC (or 2,000 if that is refused) and withdraw 500 USD to "
            + "0x" + "ab" * 20,
            context={"user_id": "alice", "session_id": "nb-02"},
        )
        await server.cleanup()

        names = {}
        outputs = []
        for item in result.new_items:
            if isinstance(item, ToolCallItem):
                names[item.raw_item.call_id] = (item.raw_item.name, item.raw_item.arguments)
            elif isinstance(item, ToolCallOutputItem):
                call_id = item.raw_item["call_id"] if isinstance(item.raw_item, dict) else item.raw_item.call_id
                outputs.append((*names[call_id], str(item.output)))
        print(f"model: {label}\\n")
        for name, args, output in outputs:
            print(f"{name:12} {args:70} -> {' '.join(output.split())[:90]}")
        print("\\nfinal answer:", result.final_output)
        """
    ),
    md(
        """
        The refused order came back to the model as the tool's output (the SDK's `reject_content`), the JSON
        of a policy violation; the run went on and the next order went through.
        """
    ),
    code(
        """
        def violation(text):
            return json.loads(text) if text.startswith('{"error": "policy_violation"') else None

        refused = [violation(o) for _, _, o in outputs if violation(o)]
        if SCRIPTED:
            assert [n for n, _, _ in outputs] == ["get_balance", "place_order", "place_order", "withdraw"]
            assert len(refused) == 1
            assert refused[0]["code"] == "denied"
            assert refused[0]["server"] == "exchange"
            assert refused[0]["rule"] == "/tools/place_order/deny_if/args.amount-gt"
            assert '"status":"open"' in outputs[2][2].replace(" ", "")
            assert "sent" in outputs[3][2]
        print(json.dumps(refused, indent=2))
        """
    ),
    md(
        """
        ## The audit trail

        Each event carries the server name, the caller, the decision, the rule and the policy hash. The
        withdrawal's `address` is listed under the rule's `redact`, so not even its type and size are written.
        """
    ),
    code(
        """
        for e in audit.events:
            print(e["server"], e["identity"], e["tool"], e["decision"], e["code"], e["rule"], e["args"])

        assert all(e["server"] == "exchange" and e["identity"] == "alice" for e in audit.events)
        assert all(e["policy"] == policy.hash for e in audit.events)
        withdrawals = [e for e in audit.events if e["tool"] == "withdraw"]
        assert all(e["args"]["address"] == "[redacted]" for e in withdrawals)
        if SCRIPTED:
            assert [e["decision"] for e in audit.events] == ["allow", "deny", "allow", "allow"]
        """
    ),
]


# -- 03: human approval, three ways -----------------------------------------------------------------------

HUMAN_APPROVAL: list[Cell] = [
    md(
        """
        # Human approval, three ways

        The example policy (`policies/exchange.json`) lets small USD withdrawals through and holds the rest
        for a person: `approve_if` fires when the amount is over 1,000 or the asset is not USD. How the person
        is asked depends on where the agent runs:

        1. **a callback**: any function (sync or async) that gets an `ApprovalRequest` and answers;
        2. **a LangGraph interrupt**: the graph pauses, your application asks, `Command(resume=...)` continues;
        3. **the Agents SDK's approvals**: the run stops with `result.interruptions`, you `approve` or `reject`.

        In every case a person can approve, decline (the model is told, and told not to retry), or approve
        with edited arguments, which are checked against the policy again.
        """
    ),
    code(
        """
        import json

        from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, Policy
        from _scripted import EXCHANGE_POLICY, agent_kwargs, agents_model, exchange_stdio, langchain_model, tool_call

        policy = Policy.load(EXCHANGE_POLICY)
        ADDRESS = "0x" + "ab" * 20


        def withdraw(asset: str, amount: float, address: str) -> str:
            \"\"\"Send `amount` of `asset` to an external `address`.\"\"\"
            return f"sent {amount:g} {asset} to {address[:10]}…"
        """
    ),
    md(
        """
        ## 1. A callback

        The approver sees everything a person needs: the tool, the arguments, who asks, the rule that asked
        for approval and why. This one stands in for a person who allows USD up to 3,000, trims larger USD
        withdrawals to 3,000, and keeps crypto on the exchange.
        """
    ),
    code(
        """
        asked: list[ApprovalRequest] = []


        def approver(request: ApprovalRequest) -> bool | ApprovalDecision:
            asked.append(request)
            if request.args["asset"] != "USD":
                return ApprovalDecision.deny("crypto stays on the exchange")
            if request.args["amount"] > 3000:
                return ApprovalDecision.edit({**request.args, "amount": 3000})
            return True


        guard = Guard(policy, approver=approver)
        results = [
            guard.invoke("withdraw", {"asset": asset, "amount": amount, "address": ADDRESS}, withdraw, identity="alice")
            for asset, amount in [("USD", 500), ("USD", 2500), ("USD", 8000), ("BTC", 0.1)]
        ]
        for r in results:
            print(r)

        first = asked[0]
        print("\\nthe approver was asked:", first.tool, first.args["amount"], first.identity, first.rule)
        print("with:", first.description)
        assert len(asked) == 3  # 500 USD needed nobody
        assert results[0] == "sent 500 USD to 0xabababab…"
        assert results[1] == "sent 2500 USD to 0xabababab…"
        assert results[2] == "sent 3000 USD to 0xabababab…"  # the edit, checked again and run
        assert results[3]["code"] == "approval_denied"
        assert results[3]["reason"] == "crypto stays on the exchange"
        assert first.rule == "/tools/withdraw/approve_if/args.amount-gt"
        """
    ),
    md(
        """
        ## 2. A LangGraph interrupt

        With `GuardMiddleware(approval="interrupt")`, a call that needs a person pauses the graph (it needs a
        checkpointer and a `thread_id`). Nothing is counted against rate limits before the answer. The
        application shows the pending call, then resumes with `Command(resume=...)`: `{"type": "approve"}`,
        `{"type": "reject", "message": ...}`, `{"type": "edit", "args": {...}}`, or plain `True` / `False`.
        """
    ),
    code(
        """
        from langchain.agents import create_agent
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import tool as as_tool
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.types import Command

        from mcp_guard.integrations.langchain import GuardMiddleware

        script = [
            tool_call("withdraw", {"asset": "USD", "amount": 2500, "address": ADDRESS}),
            "Withdrew what you approved.",
            tool_call("withdraw", {"asset": "ETH", "amount": 1, "address": ADDRESS}),
            "The withdrawal was declined.",
        ]
        model, label = langchain_model(script)
        SCRIPTED = label == "scripted"
        agent = create_agent(
            model,
            [as_tool(withdraw)],
            middleware=[GuardMiddleware(policy, approval="interrupt", identity="alice")],
            checkpointer=InMemorySaver(),
        )

        config = {"configurable": {"thread_id": "approval-1"}}
        result = agent.invoke({"messages": [{"role": "user", "content": f"Withdraw 2,500 USD to {ADDRESS}"}]}, config)
        pending = result["__interrupt__"][0].value if result.get("__interrupt__") else None
        print(json.dumps(pending, indent=2))
        """
    ),
    code(
        """
        if pending is not None:
            assert pending["type"] == "tool_approval"
            assert pending["name"] == "withdraw"
            assert pending["mcp_guard"]["rule"].startswith("/tools/withdraw/approve_if/")
            # The person approves, but only 1,000 USD: an edit. The edited call is checked again, then runs.
            edited = {**pending["args"], "amount": 1000}
            result = agent.invoke(Command(resume={"type": "edit", "args": edited}), config)
        answer = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
        print(answer.status, answer.content)
        if SCRIPTED:
            assert (answer.status, answer.content) == ("success", "sent 1000 USD to 0xabababab…")
        """
    ),
    code(
        """
        # Another thread, another call: this time the person says no, with a message for the model.
        config = {"configurable": {"thread_id": "approval-2"}}
        result = agent.invoke({"messages": [{"role": "user", "content": f"Withdraw 1 ETH to {ADDRESS}"}]}, config)
        if result.get("__interrupt__"):
            result = agent.invoke(Command(resume={"type": "reject", "message": "no crypto withdrawals"}), config)
        answer = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
        print(answer.status, answer.content)
        if SCRIPTED:
            refusal = json.loads(answer.content)
            assert answer.status == "error"
            assert (refusal["code"], refusal["reason"]) == ("approval_denied", "no crypto withdrawals")
            assert refusal["hint"].startswith("A human declined this call")
        """
    ),
    md(
        """
        ## 3. The Agents SDK: interruptions and resume

        `guard_mcp_server` with no `approver` wires the policy into the SDK's own approval flow: a call that
        needs a person stops the run with `result.interruptions`. The state can be saved as a string (a
        database row, a queue message) and resumed later, in another process if need be.
        """
    ),
    code(
        """
        from agents import Agent, Runner, RunState
        from agents.mcp import MCPServerStdio

        from mcp_guard.integrations.openai_agents import guard_mcp_server

        audit = MemorySink()
        server = guard_mcp_server(
            MCPServerStdio(params=exchange_stdio(), name="exchange", cache_tools_list=True),
            Guard(policy, audit=audit),
        )
        await server.connect()

        model, label = agents_model(
            [("withdraw", {"asset": "USD", "amount": 2500, "address": ADDRESS})], final="Withdrew 2,500 USD."
        )
        agent = Agent(
            name="treasurer", instructions="Operate the exchange account.", mcp_servers=[server], **agent_kwargs(model)
        )
        result = await Runner.run(agent, f"Withdraw 2,500 USD to {ADDRESS}", context={"user_id": "alice"})
        for item in result.interruptions:
            print("waiting for a person:", item.name, item.arguments)
        if label == "scripted":
            assert [i.name for i in result.interruptions] == ["withdraw"]
            assert audit.events == []  # nothing ran, nothing was counted
        """
    ),
    code(
        """
        saved = result.to_state().to_string()  # durable: store it anywhere
        print(f"saved state: {len(saved)} characters")

        state = await RunState.from_string(agent, saved)
        for item in state.get_interruptions():
            state.approve(item)
        result = await Runner.run(agent, state)
        outputs = [str(i.output) for i in result.new_items if i.type == "tool_call_output_item"]
        print(outputs)
        print("final answer:", result.final_output)
        if label == "scripted":
            assert any('"status": "sent"' in o for o in outputs)
            assert [(e["tool"], e["decision"]) for e in audit.events] == [("withdraw", "allow")]
        """
    ),
    code(
        """
        # And a refusal: the model receives the person's message as the tool's output.
        model, label = agents_model(
            [("withdraw", {"asset": "BTC", "amount": 0.1, "address": ADDRESS})], final="The withdrawal was refused."
        )
        agent = agent.clone(**agent_kwargs(model))
        result = await Runner.run(agent, f"Withdraw 0.1 BTC to {ADDRESS}", context={"user_id": "alice"})
        state = result.to_state()
        for item in result.interruptions:
            state.reject(item, rejection_message="A person declined: crypto stays on the exchange.")
        result = await Runner.run(agent, state)
        outputs = [str(i.output) for i in result.new_items if i.type == "tool_call_output_item"]
        print(outputs)
        await server.cleanup()
        if label == "scripted":
            assert [json.loads(o)["reason"] for o in outputs] == ["A person declined: crypto stays on the exchange."]
            # The declined call never reached the server: the only withdrawal that ran is the approved one.
            ran = [(e["tool"], e["decision"]) for e in audit.events if e["decision"] == "allow"]
            assert ran == [("withdraw", "allow")]
        """
    ),
]


# -- 04: rate limits and back-off -------------------------------------------------------------------------

RATE_LIMITS: list[Cell] = [
    md(
        """
        # Rate limits and back-off

        Three things a rate limit must do for an agent:

        1. tell the **model** when it may try again (`retry_after_s`), instead of failing the run;
        2. optionally **wait** for the window to free, for code that would rather block than re-plan;
        3. hold across **every worker**: two processes share one budget through Redis.

        Windows are sliding: in no interval of a window's length are more than `max` calls admitted, so there
        is no double burst at a boundary. The first two parts use an injected clock, so the numbers are exact.
        """
    ),
    code(
        """
        import atexit
        import json
        import shutil
        import socket
        import subprocess
        import sys
        import threading
        import time

        from langchain.agents import create_agent
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import tool

        from mcp_guard import Guard, Policy
        from mcp_guard.integrations.langchain import wrap_tools
        from _scripted import langchain_model, tool_call


        class Clock:
            \"\"\"A clock the guard reads instead of time.time(): the notebook moves it.\"\"\"

            def __init__(self) -> None:
                self.now = 1_700_000_000.0

            def __call__(self) -> float:
                return self.now


        @tool
        def create_listen_key() -> str:
            \"\"\"Open a user-data stream and return its listen key.\"\"\"
            return "listen-key-" + str(time.perf_counter_ns())[-6:]


        policy = Policy.from_dict(
            {
                "version": "1",
                "default": "deny",
                "tools": {
                    "create_listen_key": {
                        "limits": [{"counter": "listen_keys", "window": "minute", "max": 3, "scope": "identity"}]
                    }
                },
            }
        )
        """
    ),
    md(
        """
        ## 1. The model receives `retry_after_s`

        Three listen keys a minute per identity. The fourth call comes back as a `rate_limited` violation that
        says when to try again; the last step of this scripted model reads it, as a real model would.
        """
    ),
    code(
        """
        clock = Clock()
        guard = Guard(policy, clock=clock)


        def read_the_refusal(messages):
            refusal = json.loads(messages[-1].content)
            return f"I hit {refusal['rule']}; I will try again in {refusal['retry_after_s']:g} s."


        model, label = langchain_model([tool_call("create_listen_key") for _ in range(4)] + [read_the_refusal])
        SCRIPTED = label == "scripted"
        agent = create_agent(model, wrap_tools([create_listen_key], guard, identity="alice"))
        result = agent.invoke({"messages": [{"role": "user", "content": "Open four user-data streams, one by one."}]})
        replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        for m in replies:
            print(m.status, m.content[:120])
        print("\\nthe model says:", result["messages"][-1].content)
        if SCRIPTED:
            assert [m.status for m in replies] == ["success"] * 3 + ["error"]
            refusal = json.loads(replies[-1].content)
            assert refusal["code"] == "rate_limited"
            assert refusal["retry_after_s"] == 60  # all three calls were at the same instant of the fake clock
            assert result["messages"][-1].content.endswith("try again in 60 s.")
        """
    ),
    code(
        """
        # The window slides: 60 s later alice has her budget back; bob never shared it.
        noop = lambda: "ok"
        print("bob now:", guard.invoke("create_listen_key", {}, noop, identity="bob"))
        clock.now += 60
        print("alice, 60 s later:", guard.invoke("create_listen_key", {}, noop, identity="alice"))
        assert guard.invoke("create_listen_key", {}, noop, identity="bob") == "ok"
        assert guard.invoke("create_listen_key", {}, noop, identity="alice") == "ok"
        """
    ),
    md(
        """
        ## 2. The wait mode

        `on_rate_limit="wait"` sleeps until the window has room and tries again, at most `max_wait_s` in all;
        a wait longer than that is not started, and the violation comes back at once. Here the guard sleeps
        on the fake clock too (`sleep=`), so the minute passes instantly; by default it really sleeps.
        """
    ),
    code(
        """
        clock = Clock()
        slept = []


        def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.now += seconds


        waiting = Guard(policy, clock=clock, sleep=fake_sleep, on_rate_limit="wait", max_wait_s=90)
        keys = [waiting.invoke("create_listen_key", {}, noop, identity="alice") for _ in range(5)]
        print(keys)
        print("slept:", slept)
        assert keys == ["ok"] * 5
        assert slept == [60]  # call 4 waits for the first minute to slide past; call 5 then fits too

        impatient = Guard(policy, clock=clock, sleep=fake_sleep, on_rate_limit="wait", max_wait_s=10)
        for _ in range(3):
            impatient.invoke("create_listen_key", {}, noop, identity="carol")
        slept.clear()
        refused = impatient.invoke("create_listen_key", {}, noop, identity="carol")
        print(refused["code"], refused["retry_after_s"], "slept:", slept)
        assert refused["code"] == "rate_limited"
        assert slept == []  # a 60 s wait is longer than max_wait_s=10: no pointless sleeping
        """
    ),
    md(
        """
        ## 3. One budget for every worker: Redis

        Two worker processes (`_rate_worker.py`) each try 8 calls under a limit of 5 a minute for everyone
        (`scope: global`). With a `redis://` store they share one budget, and exactly 5 calls get in, however
        the two interleave: each decision is one atomic Lua script on the server.

        If `redis-server` (or the `redis` package) is not installed, this falls back to the `memory://` store,
        which is shared only inside one process: the two workers then run as two threads of this kernel.
        """
    ),
    code(
        """
        from _rate_worker import new_guard, run_calls


        def free_port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]


        redis_server = shutil.which("redis-server")
        try:
            import redis
        except ImportError:
            redis = None

        server_proc = None
        if redis_server and redis is not None:
            port = free_port()
            server_proc = subprocess.Popen(
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            atexit.register(server_proc.kill)  # never leave a redis-server behind, even if a cell fails
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            STORE = f"redis://127.0.0.1:{port}/0"
            print(f"redis-server found: two worker processes share {STORE}")
        else:
            STORE = "memory://"
            print("no redis-server here: falling back to memory://, two worker threads sharing one Guard")
        """
    ),
    code(
        """
        if STORE.startswith("redis://"):
            workers = [
                subprocess.Popen(
                    [sys.executable, "_rate_worker.py", STORE, name, "8"], stdout=subprocess.PIPE, text=True
                )
                for name in ("worker-a", "worker-b")
            ]
            reports = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
        else:
            shared = new_guard(STORE)
            reports = []
            threads = [
                threading.Thread(target=lambda n=name: reports.append(run_calls(shared, n, 8)))
                for name in ("worker-a", "worker-b")
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        for r in reports:
            print(r)
        total = sum(r["admitted"] for r in reports)
        print("admitted in total:", total)
        assert total == 5
        assert sum(r["refused"].get("rate_limited", 0) for r in reports) == 11
        """
    ),
    code(
        """
        if server_proc is not None:
            server_proc.terminate()
            server_proc.wait(timeout=10)
        """
    ),
]


# -- 05: policy authoring ---------------------------------------------------------------------------------

POLICY_AUTHORING: list[Cell] = [
    md(
        """
        # Writing a policy: validate, explain, classes, and reading the audit log

        A policy is a small JSON or YAML file. This notebook goes through the loop of writing one:

        1. `mcp-guard validate` (a policy that does not validate never loads; errors name the field path);
        2. `mcp-guard explain` (what one call would get, and why);
        3. risk classes from MCP annotations, and `mcp-guard init` to start from a server's own tools;
        4. the audit log read back, with a plot of decisions over time.

        The commands run here through `subprocess`; in a terminal, type them as shown.
        """
    ),
    code(
        """
        import json
        import random
        import subprocess
        import sys
        import tempfile
        from collections import Counter
        from pathlib import Path

        from mcp_guard import Guard, Policy

        WORK = Path(tempfile.mkdtemp(prefix="mcp-guard-nb05-"))


        def mcp_guard(*args: str) -> subprocess.CompletedProcess:
            \"\"\"Run `mcp-guard ARGS...` with this kernel's Python and show what it printed.\"\"\"
            print("$ mcp-guard", " ".join(args))
            run = subprocess.run(
                [sys.executable, "-m", "mcp_guard._cli", *args], capture_output=True, text=True, timeout=60
            )
            print(run.stdout + run.stderr)
            return run
        """
    ),
    md(
        """
        ## 1. Validate

        The JSON and YAML versions of the example policy are the same policy: same content, same hash.
        """
    ),
    code(
        """
        json_run = mcp_guard("validate", "policies/exchange.json")
        yaml_run = mcp_guard("validate", "policies/exchange.yaml")
        assert json_run.returncode == 0
        assert yaml_run.returncode == 0
        assert Policy.load("policies/exchange.json").hash == Policy.load("policies/exchange.yaml").hash
        """
    ),
    md(
        """
        A policy with mistakes is refused as a whole, with every problem at its JSON path, what was wrong and
        what is allowed. Unknown fields are errors too: a typo never silently switches a rule off.
        """
    ),
    code(
        """
        broken = {
            "version": "1",
            "default": "deny",
            "tools": {
                "place_order": {
                    "deny_if": {"args.amount": {"greater_than": 5000}},
                    "limits": [{"counter": "spend", "window": "fortnight", "max": 10000}],
                    "reson": "typo",
                }
            },
        }
        (WORK / "broken.json").write_text(json.dumps(broken))
        run = mcp_guard("validate", str(WORK / "broken.json"))
        assert run.returncode != 0
        for path in ("deny_if/args.amount", "limits/0/window", "reson"):
            assert f"/tools/place_order/{path}" in run.stdout + run.stderr, path
        """
    ),
    md(
        """
        ## 2. Explain one call

        `explain` evaluates a call without running anything: the decision, the rule pointer, the reason, and
        every limit the call would be charged (shown, not counted).
        """
    ),
    code(
        """
        ADDRESS = "0x" + "ab" * 20
        mcp_guard(
            "explain", "policies/exchange.json", "--tool", "withdraw", "--identity", "alice",
            "--args", json.dumps({"asset": "BTC", "amount": 0.1, "address": ADDRESS}),
        )
        run = mcp_guard(
            "explain", "policies/exchange.json", "--tool", "place_order", "--identity", "alice", "--json",
            "--args", json.dumps({"symbol": "BTCUSD", "side": "buy", "amount": 7500}),
        )
        explained = json.loads(run.stdout)
        assert (explained["action"], explained["code"]) == ("deny", "denied")
        assert explained["rule"] == "/tools/place_order/deny_if/args.amount-gt"
        assert explained["payload"]["error"] == "policy_violation"  # exactly what the model would receive
        """
    ),
    md(
        """
        ## 3. Risk classes from MCP annotations

        MCP servers describe their tools with hints: `readOnlyHint`, `destructiveHint`, `openWorldHint`.
        The policy's `classes` turn them into rules for tools no name pattern matches, with MCP's defaults for
        hints left out (a tool is assumed destructive and open-world unless it says otherwise). A tool with no
        annotations at all has no class: `default` decides. Here are the notes server's tools under a policy
        made only of classes.
        """
    ),
    code(
        """
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        notes_server = StdioServerParameters(command=sys.executable, args=["servers/notes_server.py"])
        async with stdio_client(notes_server) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            listed = (await session.list_tools()).tools

        by_class = Policy.from_dict(
            {
                "version": "1",
                "default": "deny",
                "classes": {
                    "read": {},
                    "write": {"rate_limit": "30/minute"},
                    "open_world": {"rate_limit": "10/minute"},
                    "destructive": {"action": "require_approval"},
                },
            }
        )
        seen = {}
        for t in listed:
            hints = t.annotations.model_dump(exclude_none=True) if t.annotations else {}
            d = by_class.evaluate(t.name, {}, annotations=hints)
            seen[t.name] = (d.risk_class, d.action, d.rule)
            print(f"{t.name:12} {str(hints):75} -> {str(d.risk_class):11} {d.action:17} {d.rule}")

        assert seen["list_notes"] == ("read", "allow", "/classes/read")
        assert seen["add_note"][:2] == ("open_world", "allow")  # destructiveHint false, openWorldHint unset
        assert seen["delete_note"][:2] == ("destructive", "require_approval")
        assert seen["search_web"] == (None, "deny", "/default")  # no annotations: no class
        """
    ),
    md(
        """
        `mcp-guard init` does this for you: it starts a server, reads its tools and annotations, and writes a
        starter policy (default deny; read-only tools allowed; writes rate-limited; destructive tools, and
        tools that say nothing, held for a person), with a `description` on every rule saying why.
        """
    ),
    code(
        """
        starter = WORK / "notes-policy.json"
        run = mcp_guard("init", "--output", str(starter), "--", sys.executable, "servers/notes_server.py")
        print(starter.read_text()[:1200], "...")
        assert run.returncode == 0
        assert mcp_guard("validate", str(starter)).returncode == 0
        rules = json.loads(starter.read_text())["tools"]
        assert rules["search_web"]["action"] == "require_approval"
        """
    ),
    md(
        """
        ## 4. The audit log, read back

        A simulated morning of an over-eager trading agent: 300 calls over ten minutes, through a guard with
        the example policy and a JSONL audit file. The clock is simulated so the notebook runs in a second.
        """
    ),
    code(
        """
        class Clock:
            def __init__(self) -> None:
                self.now = 1_700_000_000.0

            def __call__(self) -> float:
                return self.now


        clock = Clock()
        audit_path = WORK / "audit.jsonl"
        guard = Guard(Policy.load("policies/exchange.json"), clock=clock, audit=audit_path)
        rng = random.Random(7)
        for i in range(300):
            clock.now += 2.0
            roll = rng.random()
            if roll < 0.35:
                tool, args = "get_ticker", {"symbol": "BTCUSD"}
            elif roll < 0.75:
                tool, args = "create_listen_key", {}
            else:
                tool, args = "place_order", {"symbol": "ETHUSD", "side": "buy", "amount": rng.choice([500, 1500, 6000])}
            guard.invoke(tool, args, lambda **kw: "ok", identity="alice", session=f"s{i // 60}")
        guard.close()

        events = [json.loads(line) for line in audit_path.read_text().splitlines()]
        outcomes = Counter(e["code"] or "allowed" for e in events)
        print(audit_path)
        print(json.dumps(events[0], indent=2))
        print(outcomes)
        assert len(events) == 300
        assert outcomes["allowed"] > 0 and outcomes["denied"] > 0 and outcomes["rate_limited"] > 0
        assert set(outcomes) <= {"allowed", "denied", "rate_limited"}
        """
    ),
    code(
        """
        import matplotlib

        matplotlib.use("Agg")  # no display needed: the plot goes to a PNG
        import matplotlib.pyplot as plt

        from datetime import datetime

        seconds = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in events]
        minutes = sorted({int((t - seconds[0]) // 60) for t in seconds})
        kinds = ["allowed", "denied", "rate_limited"]
        counts = {k: [0] * len(minutes) for k in kinds}
        for e, t in zip(events, seconds):
            counts[e["code"] or "allowed"][int((t - seconds[0]) // 60)] += 1

        fig, ax = plt.subplots(figsize=(8, 3.5))
        bottom = [0] * len(minutes)
        for kind, color in zip(kinds, ["tab:green", "tab:red", "tab:orange"]):
            ax.bar(minutes, counts[kind], bottom=bottom, label=kind, color=color)
            bottom = [b + c for b, c in zip(bottom, counts[kind])]
        ax.set_xlabel("minute")
        ax.set_ylabel("calls")
        ax.set_title("Decisions over time")
        ax.legend()
        png = WORK / "decisions.png"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        plt.close(fig)
        print(png, png.stat().st_size, "bytes")
        assert png.stat().st_size > 5_000
        assert sum(bottom) == 300
        # create_listen_key is capped at 30 a minute: after the first minutes' burst, refusals appear.
        assert sum(counts["rate_limited"]) == outcomes["rate_limited"]
        """
    ),
]


NOTEBOOKS: dict[str, list[Cell]] = {
    "01_quickstart_langchain.ipynb": QUICKSTART_LANGCHAIN,
    "02_openai_agents_mcp.ipynb": AGENTS_MCP,
    "03_human_approval.ipynb": HUMAN_APPROVAL,
    "04_rate_limits.ipynb": RATE_LIMITS,
    "05_policy_authoring.ipynb": POLICY_AUTHORING,
}


def build(cells: list[Cell]) -> Any:
    nb = new_notebook(
        cells=[new_markdown_cell(src) if kind == "markdown" else new_code_cell(src) for kind, src in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    # Stable cell ids, so rebuilding an unchanged notebook changes nothing in git.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def render(cells: list[Cell]) -> str:
    text: str = nbformat.writes(build(cells), version=4)
    return text + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        text = render(cells)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run python examples/_build_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
