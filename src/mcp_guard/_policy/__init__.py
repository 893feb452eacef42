"""The pure core: a policy document in, a Decision out. No I/O, no clock, no callbacks.

model (the document's pydantic models and bounded loading), matching and locate (tool patterns, field
positions), conditions and argcheck (checks), session, caller, results and detectors (what the 0.3 rules read),
decision (Decision, LimitCharge, codes), policy (Policy: compile, evaluate).
"""
