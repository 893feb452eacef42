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
            assert denied["reason"].startswith("Payments over 100 USD need a person, not an agent.")
            # The refused 5,000 USD payment used no quota: bob, carol and dave are the three of this minute.
            assert limited["code"] == "rate_limited"
            assert 0 < limited["retry_after_s"] <= 60
        print(json.dumps(refusals[-1], indent=2))
        """
    ),
    md(
        """
        ## The audit log

        One event per call, whatever happened. Argument values are never written in clear: each is a short
        hash (or `[redacted]` for paths a rule lists under `redact`), so the log can be shared.
        """
    ),
    code(
        """
        for e in audit.events:
            print(f"{e['tool']:13} {e['decision']:6} {str(e['code']):13} {e['outcome']:7} {e['args']}")

        assert len(audit.events) == len(replies)
        assert all(v.startswith("sha256:") for e in audit.events for v in e["args"].values())
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
            print(f"{name:12} {args:70} -> {output[:90]}")
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
        withdrawal's `address` is listed under the rule's `redact`, so it is not even hashed.
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


NOTEBOOKS: dict[str, list[Cell]] = {
    "01_quickstart_langchain.ipynb": QUICKSTART_LANGCHAIN,
    "02_openai_agents_mcp.ipynb": AGENTS_MCP,
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
