"""The exchange test server of the coercion and hiding attacks: ``fixture_server.py recording``.

Its tools (``transfer``, ``withdraw``, ``get_balance``, ``admin_reset``, ``fail``) and its record, the arguments
each tool ran with after FastMCP's own coercion, are described in :mod:`servers.fixture_server`.
"""

from __future__ import annotations

import functools

from . import fixture_server
from .fixture_server import Order, read_record

SERVER_NAME = "exchange"

#: ``MultiServerMCPClient`` stdio connection dict that starts this server recording into ``record_file``.
server_params = functools.partial(fixture_server.server_params, "recording")

__all__ = ["SERVER_NAME", "Order", "read_record", "server_params"]
