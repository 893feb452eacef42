"""Hot reload: swap a Guard's policy for a new version of its file, never for a broken one.

``Guard(path, reload=True)`` watches the file (``watchfiles``, extra ``reload``) in one daemon thread that
:meth:`Guard.close` stops; ``guard.reload()`` does the same by hand. The new file is loaded and validated
first; if that fails the old policy stays in force, the error is logged and an audit event is written::

    {"event": "policy_reload", "ok": false, "error": "...", "policy": "<hash in force>", "source": "..."}

A call reads ``guard.policy`` once (one attribute read), so it is decided by exactly one policy, and its audit
event names that policy's hash. Counters live in the store under ``counter:scope:id`` (see
:class:`~mcp_guard._decision.LimitCharge`): neither the window nor the max is part of the key, so a limit that
a reload leaves unchanged keeps its count, and a limit whose ``max`` is lowered applies to what was already
counted from the next call on.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from mcp_guard._audit import emit, iso_time
from mcp_guard._errors import MCPGuardError, require_extra
from mcp_guard._pins import PinWatch
from mcp_guard._policy import Policy, load_policy

if TYPE_CHECKING:
    from mcp_guard._guard import Guard

log = logging.getLogger("mcp_guard")


def reload_policy(guard: Guard, source: Any = None) -> bool:
    """Load ``source`` (default: the file the guard was built from) and put it in force if it is valid.

    Returns True when a new policy is now in force; False when it failed (old policy kept; logged and
    audited) or is the same policy (same hash: nothing to do, nothing audited).
    """
    where = source if source is not None else guard._policy_path
    if where is None:
        raise ValueError("this Guard was not built from a file: pass the new policy, guard.reload(policy_or_path)")
    label = os.fspath(where) if isinstance(where, (str, os.PathLike)) else type(where).__name__
    with guard._reload_lock:  # one reload at a time, so "previous" in the audit event is right
        old = guard.policy
        try:
            new = load_policy(where)
            pins = PinWatch.for_policy(new, guard._pins)  # a pins block whose lock cannot be read fails here
        except (MCPGuardError, OSError, TypeError, ValueError) as exc:
            log.error("policy reload from %s failed; keeping %s: %s", label, old.hash, exc)
            _audit(guard, {"ok": False, "error": str(exc), "policy": old.hash, "source": label})
            return False
        if new.hash == old.hash:
            return False
        guard._set_policy(new, pins)
        log.info("policy reloaded from %s: %s (was %s)", label, new.hash, old.hash)
        _audit(guard, {"ok": True, "policy": new.hash, "previous": old.hash, "source": label})
    for listener in list(guard._reload_listeners):
        try:
            listener(new)
        except Exception:  # a listener's failure never undoes the reload or stops the others
            log.exception("a reload listener failed")
    return True


def _audit(guard: Guard, fields: dict[str, Any]) -> None:
    if guard.audit_sinks:
        emit(guard.audit_sinks, {"time": iso_time(guard.clock()), "event": "policy_reload", **fields})


class PolicyWatcher:
    """A daemon thread that reloads the guard's policy whenever its file changes.

    Watches the file's directory (editors often replace a file by renaming a new one over it, which a watch
    on the file itself would lose) and reacts to changes of that one path. When the watch is established the
    file is read once more, so a change made while the thread was starting is not missed.
    """

    def __init__(self, guard: Guard, path: str | os.PathLike[str]) -> None:
        self._watchfiles = require_extra("watchfiles", "reload", "Guard(reload=True)")
        self._guard = guard
        self._target = os.path.realpath(path)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcp-guard-reload", daemon=True)

    def start(self) -> PolicyWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        directory = os.path.dirname(self._target)
        try:
            for changes in self._watchfiles.watch(
                directory,
                stop_event=self._stop,
                yield_on_timeout=True,  # an empty batch every rust_timeout: tells us the watch is up
                rust_timeout=200,
                debounce=50,
                recursive=False,
                raise_interrupt=False,
            ):
                if self._stop.is_set():
                    return
                if not self.ready.is_set():
                    self.ready.set()
                    self._reload()
                elif any(os.path.realpath(path) == self._target for _, path in changes):
                    self._reload()
        except Exception:  # the watch itself failed (directory removed...): say so, keep the policy in force
            log.exception("policy watcher for %s stopped", self._target)
        finally:
            self.ready.set()

    def _reload(self) -> None:
        try:
            reload_policy(self._guard)
        except Exception:  # never let the thread die on one bad reload
            log.exception("policy reload from %s failed", self._target)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


__all__ = ["Policy", "PolicyWatcher", "reload_policy"]
