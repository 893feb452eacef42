"""mcp-guard: one policy between AI agents and the MCP tools they call.

>>> from mcp_guard import Policy, Guard
>>> policy = Policy.load("policy.json")
>>> policy.evaluate("git_log", {"max_count": 5}, server="git").action
'allow'

Rate limits are counted by a store: :class:`MemoryStore` (``memory://``, the default) for one process,
:class:`RedisStore` (``redis://``) shared by every worker, :class:`RedisClusterStore` (``redis+cluster://``)
shared over a cluster's shards; :func:`store_from_uri` builds one from its URI.

The framework adapters live in :mod:`mcp_guard.integrations.langchain` and
:mod:`mcp_guard.integrations.openai_agents`; this package imports none of the frameworks.
"""

from mcp_guard._audit.events import AuditSink, JsonlSink, LoggingSink, MemorySink, OTelSink
from mcp_guard._calls.approval import (
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    auto_approve,
    auto_deny,
    console_approver,
)
from mcp_guard._errors import (
    ApprovalError,
    ConfigurationError,
    MCPGuardError,
    MissingExtraError,
    PolicyError,
    PolicyViolation,
    StoreError,
)
from mcp_guard._guard.guard import Admission, Guard, GuardResult, ToolCall, as_guard
from mcp_guard._guard.retry import RetryPolicy
from mcp_guard._guard.usage import LimitUsage
from mcp_guard._inbox.inbox import Inbox
from mcp_guard._policy.decision import CODES, Action, Code, Decision, LimitCharge
from mcp_guard._policy.policy import Policy, load_policy
from mcp_guard._policy.session import ResultSeen, SessionView
from mcp_guard._stores import (
    MemoryStore,
    RedisClusterStore,
    RedisStore,
    Store,
    StoreProtocol,
    Usage,
    Verdict,
    store_from_uri,
)
from mcp_guard._version import __version__

__all__ = [
    "CODES",
    "Action",
    "Admission",
    "ApprovalDecision",
    "ApprovalError",
    "ApprovalRequest",
    "Approver",
    "AuditSink",
    "Code",
    "ConfigurationError",
    "Decision",
    "Guard",
    "GuardResult",
    "Inbox",
    "JsonlSink",
    "LimitCharge",
    "LimitUsage",
    "LoggingSink",
    "MCPGuardError",
    "MemorySink",
    "MemoryStore",
    "MissingExtraError",
    "OTelSink",
    "Policy",
    "PolicyError",
    "PolicyViolation",
    "RedisClusterStore",
    "RedisStore",
    "ResultSeen",
    "RetryPolicy",
    "SessionView",
    "Store",
    "StoreError",
    "StoreProtocol",
    "ToolCall",
    "Usage",
    "Verdict",
    "__version__",
    "as_guard",
    "auto_approve",
    "auto_deny",
    "console_approver",
    "load_policy",
    "store_from_uri",
]
