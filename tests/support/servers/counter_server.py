"""The exchange test server that counts every call it receives: ``fixture_server.py counter``.

Its tools (``get_balance``, ``create_listen_key``, ``place_order``, ``withdraw``, ``delete_api_key``, ``flaky``)
and its record are described in :mod:`servers.fixture_server`; this module starts it and reads what it ran, so a
test proves that a denied call never reached the server without trusting any guard's own bookkeeping.
"""

from __future__ import annotations

import functools

from . import fixture_server
from .fixture_server import read_counts, read_record

SERVER_NAME = "exchange"

#: ``MultiServerMCPClient`` stdio connection dict that starts this server counting into ``counter_file``.
server_params = functools.partial(fixture_server.server_params, "counter")
#: The command line that starts this server over stdio (``[*command(), "--http", PORT]`` for HTTP).
command = functools.partial(fixture_server.command, "counter")

__all__ = ["SERVER_NAME", "command", "read_counts", "read_record", "server_params"]
