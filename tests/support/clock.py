"""A clock that tests move by hand: inject it as ``clock=`` into stores and guards; never sleep for a window."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when told: ``clock()`` is the time, ``clock.advance(s)`` moves it on.

    Starts at an epoch-sized value so float precision matches real timestamps.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
