"""Fixtures of the inbox tests: ``inbox_url``, parametrised over a private memory inbox and the session's Redis."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def inbox_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"  # a private in-process inbox per test
    url: str = request.getfixturevalue("redis_url")
    return url
