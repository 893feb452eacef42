"""The exchange test server of the approval inbox tests: ``fixture_server.py inbox`` (one tool, ``place_order``).

Its record, every call with its arguments, is described in :mod:`servers.fixture_server`.
"""

from __future__ import annotations

import functools

from . import fixture_server
from .fixture_server import read_record

#: ``MultiServerMCPClient`` stdio connection dict that starts this server recording into ``record_file``.
server_params = functools.partial(fixture_server.server_params, "inbox")

__all__ = ["read_record", "server_params"]
