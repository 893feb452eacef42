"""The proxy tests' upstream: ``fixture_server.py notes`` (server ``notes``), tools plus a resource and a prompt.

Its tools (``echo``, ``write_note``, ``delete_notes``, ``purge``, ``publish``, ``fail``), its record and its
``PID_FILE`` are described in :mod:`servers.fixture_server`. ``[*command(), "--http", PORT]`` serves streamable
HTTP on 127.0.0.1:PORT at ``/mcp``.
"""

from __future__ import annotations

import functools

from . import fixture_server
from .fixture_server import read_record

SERVER_NAME = "notes"

#: The command line that starts this server over stdio.
command = functools.partial(fixture_server.command, "notes")

__all__ = ["SERVER_NAME", "command", "read_record"]
