"""Marks shared across the test folders."""

from __future__ import annotations

import pytest

#: Run an async test on its module's event loop: the loop the module-scoped servers (``exchange_server``,
#: ``recording_session``, ``agents_recording_server``, ...) were started on, so their sessions stay usable.
module_loop = pytest.mark.asyncio(loop_scope="module")
