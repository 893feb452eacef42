"""STUB - replaced by the policy model + evaluator. Interface is the contract."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mcp_guard._decision import Decision


class Policy:
    name: str | None
    description: str | None
    hash: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        raise NotImplementedError

    def evaluate(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Decision:
        raise NotImplementedError

    def exposes(self, tool: str, *, server: str | None = None, annotations: Mapping[str, Any] | None = None) -> bool:
        raise NotImplementedError


def load_policy(source: Any) -> Policy:
    raise NotImplementedError
