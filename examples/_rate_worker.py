"""One worker process for notebook 04: tries ``CALLS`` calls under a global limit and prints how many got in.

``python _rate_worker.py STORE_URI NAME CALLS``. Several of these share one budget only through a shared
store (``redis://...``); each would have its own with ``memory://``.
"""

from __future__ import annotations

import json
import sys

from mcp_guard import Guard, Policy

# Five calls a minute, for everyone together (scope "global"), whichever process they come from.
POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "create_listen_key": {"limits": [{"counter": "listen_keys", "window": "minute", "max": 5, "scope": "global"}]}
    },
}


def new_guard(store: str) -> Guard:
    return Guard(Policy.from_dict(POLICY), store=store)


def run_calls(guard: Guard, name: str, calls: int) -> dict[str, object]:
    """Make ``calls`` calls as ``name``; count the admitted ones and the refusals by code."""
    admitted = 0
    codes: dict[str, int] = {}
    for _ in range(calls):
        result = guard.run("create_listen_key", {}, lambda: {"listenKey": "k"}, identity=name)
        if result.ok:
            admitted += 1
        else:
            assert result.violation is not None
            code = str(result.violation.code)
            codes[code] = codes.get(code, 0) + 1
    return {"worker": name, "admitted": admitted, "refused": codes}


if __name__ == "__main__":
    worker_guard = new_guard(sys.argv[1])
    print(json.dumps(run_calls(worker_guard, sys.argv[2], int(sys.argv[3]))))
    worker_guard.close()
