"""Fixtures of the proxy tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The recording upstream's record file (``RECORD_FILE``): every call it ran, read with ``read_record``."""
    return tmp_path / "record.jsonl"
