"""Exceptions raised by mcp-guard.

One root, so ``except MCPGuardError`` catches everything the library raises on purpose::

    MCPGuardError
    ├── PolicyError            a policy file or dict does not validate (never half-loaded)
    ├── ConfigurationError     the guard was set up with something it cannot use (an audit path that is a
    │   │                      directory, whose folder is missing, or that cannot be written); also a ValueError
    │   └── StoreConfigurationError  a store URI or store option it cannot use (unknown scheme, malformed
    │                          URL, bad option; rate-limit or inbox store); also a PolicyError, what 0.1 raised
    ├── PolicyViolation        a call was refused and the guard was asked to raise (on_violation="raise")
    ├── StoreError             the rate-limit store failed or could not be reached
    ├── ApprovalError          an approver raised, hung, or returned something that is not a decision
    └── MissingExtraError      an optional extra is not installed (also an ImportError)

Driver errors (redis, pydantic, json, yaml) are re-raised as these, with the original as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_guard._policy.decision import Decision


class MCPGuardError(Exception):
    """Root of every exception mcp-guard raises on purpose."""


class PolicyError(MCPGuardError, ValueError):
    """A policy does not validate.

    ``errors`` lists one entry per problem: ``{"path": "/tools/git_log/limits/0/max", "message": ...}``.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = errors or []


class ConfigurationError(MCPGuardError, ValueError):
    """The guard was given a setting it cannot work with; raised when it is built, never mid-call."""


class StoreConfigurationError(ConfigurationError, PolicyError):
    """A store URI or option cannot be used (a rate-limit store's, or an :class:`~mcp_guard.Inbox`'s): an unknown
    scheme, a malformed URL, a bad option.

    Catch it as :class:`ConfigurationError`; it is a :class:`PolicyError` too only because 0.1 and 0.2 raised that
    for a bad store URI, so ``except PolicyError`` written then still catches it.
    """


class PolicyViolation(MCPGuardError):
    """A tool call was refused by the policy.

    Raised only when the guard or adapter is built with ``on_violation="raise"``; otherwise the same
    payload is returned to the model as the tool's result.
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.payload: dict[str, Any] = decision.to_payload()
        super().__init__(f"{decision.code}: {decision.reason or decision.tool}")

    @property
    def code(self) -> str | None:
        return self.decision.code


class StoreError(MCPGuardError):
    """The rate-limit store failed or could not be reached in time."""


class ApprovalError(MCPGuardError):
    """An approver raised, hung, or returned something that is not an approval decision."""


class MissingExtraError(MCPGuardError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that fixes it."""


def require_extra(module: str, extra: str, feature: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the ``pip install`` that adds ``extra``.

    The command fits how this copy was installed (a checkout, a URL, an index): see ``mcp_guard._install``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from mcp_guard._install import install_hint

        raise MissingExtraError(
            f"{feature} requires the {extra!r} extra: {install_hint(extra)} (missing module {module!r})"
        ) from exc
