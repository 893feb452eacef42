"""What the pipeline works with: the options of a :class:`~mcp_guard.Guard`, frozen in one object.

The :class:`~mcp_guard.Guard` checks its options and builds a :class:`PipelineConfig`; the
:class:`~mcp_guard._guard.pipeline.Pipeline` reads it and never changes it. An option set on a Guard after it
was built (``guard.approval_timeout_s = 60``) swaps in a new config in one attribute write, so a call in
flight reads one config from start to end. The policy in force is not here: reload swaps it on its own
(:meth:`Pipeline.use_policy <mcp_guard._guard.pipeline.Pipeline.use_policy>`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_guard._audit.events import AuditSink
from mcp_guard._calls.approval import Asker
from mcp_guard._guard.retry import RetryPolicy
from mcp_guard._guard.shadow import Mode
from mcp_guard._stores import Store, StoreProtocol


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The options a guarded call reads (see :class:`~mcp_guard.Guard` for each), checked by the Guard."""

    store: Store | StoreProtocol
    store_timeout_s: float
    asker: Asker | None
    audit_sinks: tuple[AuditSink, ...]
    audit_failure: Literal["open", "closed"]
    audit_key: bytes | None
    on_rate_limit: Literal["error", "wait"]
    max_wait_s: float
    fail_mode: Literal["closed", "open"]
    approval_timeout_s: float | None
    retry: RetryPolicy | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    asleep: Callable[[float], Awaitable[None]]
    check_tool_schema: bool
    session_memory_bytes: int
    session_ttl_s: float
    mode: Mode | None
    store_bounded: bool = field(init=False)
    """A third-party store: each of its calls is bounded by ``store_timeout_s`` (built-ins bound their own I/O)."""
    grants: bool = field(init=False)
    """The store keeps approval grants (the built-ins do); without, every approval asks again."""

    def __post_init__(self) -> None:
        # Derived from the store, so a config made by dataclasses.replace(store=...) stays consistent.
        object.__setattr__(self, "store_bounded", not isinstance(self.store, Store))
        store: Any = self.store
        object.__setattr__(
            self, "grants", bool(getattr(store, "supports_grants", False)) and hasattr(store, "find_grant")
        )


__all__ = ["PipelineConfig"]
