"""Policy evaluations and store round trips per admitted call, through each adapter (issue 11).

Counted by wrapping ``Policy.evaluate`` and the memory store's operations (``tests/support/roundtrips.py``, which also
prints the table). Each figure is the most the adapter may spend; a change that adds an evaluation or a store
round trip to an admitted call fails here. The call itself must still have been admitted: one reservation.
"""

from __future__ import annotations

import pytest

from tests.support.roundtrips import SCENARIOS, summary

# (evaluations, store round trips, reservations) per phase of the call.
BUDGET: dict[str, dict[str, tuple[int, int, int]]] = {
    "langchain wrap_tools": {"call": (1, 1, 1)},
    "langchain GuardInterceptor": {"call": (1, 1, 1)},
    "langchain middleware, callback approval": {"call": (1, 1, 1)},
    # A tool whose rule can never ask a human is not checked before the run.
    "langchain middleware, interrupt mode, no approval rule": {"call": (1, 1, 1)},
    # The graph runs the node again on resume: the budget is checked when pausing and again on resume (spec);
    # an approving answer goes straight to the reservation (it refuses exactly as a check would).
    "langchain middleware, interrupt approval": {"pause": (1, 1, 0), "resume": (2, 2, 1)},
    "agents guard_tools": {"call": (1, 1, 1)},
    # needs_approval checks the call (is a human needed, is there budget), then the guardrail admits it.
    "agents guard_tools, approve_if not firing": {"call": (2, 2, 1)},
    # The guardrail's admission reaches the server's call_tool (through the call's _meta): not admitted twice.
    "agents guard_mcp_server (stdio)": {"call": (1, 1, 1)},
    "agents guard_tools, callback approval": {"call": (1, 1, 1)},
    "agents guard_tools, SDK approval": {"pause": (1, 1, 0), "resume": (1, 1, 1)},
    # The pre-approval guardrail pass reuses the check needs_approval made a moment before.
    "agents guard_tools, SDK approval + pre-approval guardrails": {"pause": (1, 1, 0), "resume": (1, 1, 1)},
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_an_admitted_call_costs_no_more_than_its_budget(name: str) -> None:
    phases = {phase: summary(counts) for phase, counts in (await SCENARIOS[name]()).items()}
    assert set(phases) == set(BUDGET[name])
    for phase, (evals, store, reserve) in phases.items():
        most_evals, most_store, reservations = BUDGET[name][phase]
        assert reserve == reservations, (phase, phases)
        assert evals <= most_evals, (phase, phases)
        assert store <= most_store, (phase, phases)
