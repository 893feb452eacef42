"""The public API is curated and pinned, and ``import mcp_guard`` needs none of the optional extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

import mcp_guard
from mcp_guard._install import install_hint

PUBLIC = {
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
}

# The spec's section 6 names: these must never disappear.
SPEC_NAMES = {
    "Policy",
    "Guard",
    "Decision",
    "PolicyViolation",
    "ApprovalRequest",
    "ApprovalDecision",
    "load_policy",
}


def test_all_is_pinned() -> None:
    assert set(mcp_guard.__all__) == PUBLIC
    assert len(mcp_guard.__all__) == len(PUBLIC), "no duplicates in __all__"
    assert SPEC_NAMES <= PUBLIC


def test_every_public_name_exists() -> None:
    for name in mcp_guard.__all__:
        assert hasattr(mcp_guard, name), name


def mismatch(module: types.ModuleType) -> tuple[set[str], set[str]]:
    """(public names the module binds but does not export, exported names it does not bind).

    Compared with ``vars(module)`` itself, as httpx's ``test_exported_members`` does: a name imported into the
    package but left out of ``__all__`` (or the reverse) is caught, which a hand-copied list cannot do.
    Submodules and ``_private`` names are not part of the surface; ``__version__`` is, by convention.
    """
    bound = {n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    exported = set(module.__all__)
    return bound - exported, {n for n in exported - bound if n != "__version__" or not hasattr(module, n)}


def test_all_is_exactly_the_public_names_of_the_package() -> None:
    assert mismatch(mcp_guard) == (set(), set())


def test_the_pin_catches_an_export_missing_from_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_guard, "Extra", object(), raising=False)
    assert mismatch(mcp_guard) == ({"Extra"}, set())
    monkeypatch.delattr(mcp_guard, "Extra")
    monkeypatch.setattr(mcp_guard, "__all__", [*mcp_guard.__all__, "Gone"])
    assert mismatch(mcp_guard) == (set(), {"Gone"})


def test_public_names_are_reexported_not_module_private() -> None:
    # Everything public is reached from the package, never as mcp_guard._module.Name in user code.
    for name in PUBLIC - {"__version__", "CODES", "Action", "Code", "Approver"}:  # constants and type aliases
        obj = getattr(mcp_guard, name)
        module = getattr(obj, "__module__", "")
        assert module.startswith("mcp_guard"), (name, module)


BLOCKED = [
    "langchain",
    "langchain_core",
    "langgraph",
    "agents",
    "redis",
    "yaml",
    "mcp",
    "opentelemetry",
    "starlette",
    "uvicorn",
]

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())

    import mcp_guard
    from mcp_guard import Policy, MissingExtraError

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded

    policy = Policy.from_dict({{"version": "1", "default": "deny", "tools": {{"x": {{}}}}}})
    assert policy.evaluate("x").allowed
    try:
        Policy.from_yaml("version: 1\\ndefault: deny\\n")
    except MissingExtraError as exc:
        assert isinstance(exc, ImportError)
        print("MISSING:", exc)
    else:
        raise SystemExit("from_yaml worked without yaml")
    """
)


def test_import_without_any_extra() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert install_hint("yaml") in proc.stdout
