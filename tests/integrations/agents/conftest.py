"""Fixtures of the Agents SDK tests: the counter server as ``MCPServerStdio``, one per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from agents.mcp import MCPServerStdio

from tests.support.agents_helpers import counter_server
from tests.support.cases import SERVER


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents_counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The counter file of ``agents_counter_server``: how many calls each tool received."""
    return tmp_path_factory.mktemp("agents_counter") / "calls.txt"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents_counter_server(agents_counter: Path) -> AsyncIterator[MCPServerStdio]:
    """The counter server's exchange tools as ``MCPServerStdio`` named ``exchange`` (the cases' ``SERVER``)."""
    async with counter_server(agents_counter, SERVER) as server:
        yield server
