"""``python -m mcp_guard``: the ``mcp-guard`` command, for when the console script is not on ``PATH``."""

from __future__ import annotations

import sys

from mcp_guard._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
