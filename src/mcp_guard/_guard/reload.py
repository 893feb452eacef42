"""Hot reload: swap a Guard's policy for a new version of its file, never for a broken one.

``Guard(path, reload=True)`` watches the file (``watchfiles``, extra ``reload``) in one daemon thread that
:meth:`Guard.close` stops; ``guard.reload()`` does the same by hand. The new file is loaded and validated
first; if that fails the old policy stays in force, the error is logged and an audit event is written::

    {"event": "policy_reload", "ok": false, "error": "...", "policy": "<hash in force>", "source": "..."}

A call reads ``guard.policy`` once (one attribute read), so it is decided by exactly one policy, and its audit
event names that policy's hash. Counters live in the store under ``counter:scope:id`` (see
:class:`~mcp_guard._policy.decision.LimitCharge`): neither the window nor the max is part of the key, so a limit that
a reload leaves unchanged keeps its count, and a limit whose ``max`` is lowered applies to what was already
counted from the next call on.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from mcp_guard._audit.events import emit, iso_time
from mcp_guard._errors import MCPGuardError, require_extra
from mcp_guard._guard.pins import PinWatch
from mcp_guard._policy.policy import Policy, load_policy

if TYPE_CHECKING:
    from mcp_guard._guard.guard import Guard

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
            pins = PinWatch.for_policy(new, guard._pipeline.pins)  # a pins block whose lock cannot be read fails here
        except (MCPGuardError, OSError, TypeError, ValueError) as exc:
            log.error("policy reload from %s failed; keeping %s: %s", label, old.hash, exc)
            _audit(guard, {"ok": False, "error": str(exc), "policy": old.hash, "source": label})
            return False
        if new.hash == old.hash:
            return False
        guard._pipeline.use_policy(new, pins)  # one write: calls already started keep theirs
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


#: Seconds between two looks at the file when no event comes (the polling fallback, and the safety net under
#: file events): a change is in force within about this long even where the file system sends no events.
POLL_INTERVAL_S = 0.5
#: Set (to anything but ``0``/``false``/empty) to force polling: for file systems without events (NFS, some
#: container mounts) under a program that only says ``reload=True`` (``mcp-guard proxy --reload``).
RELOAD_POLL_ENV = "MCP_GUARD_RELOAD_POLL"
_MAX_HOPS = 40  # symlinks followed when listing the directories to watch (the kernel's own limit is 40)

#: What identifies the file's content without reading it: where the path leads now, and that file's identity,
#: size and times. A symlink swapped, a file renamed over, or one written in place each change it.
FileState = tuple[str, int, int, int, int, int]


def file_state(path: str | os.PathLike[str]) -> FileState | None:
    """(realpath, device, inode, mtime_ns, ctime_ns, size) of the file ``path`` leads to; None when it is gone."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    return (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def path_chain(path: str | os.PathLike[str]) -> list[str]:
    """The path, each symlink hop it goes through (as written, made absolute), and where it finally leads.

    ``policy.json -> ..data/policy.json`` with ``..data -> ..2024_01_01`` (a Kubernetes ConfigMap) gives the
    path, ``.../..data/policy.json`` and ``.../..2024_01_01/policy.json``: a change to any of them can change
    what the path means.
    """
    current = os.path.abspath(path)
    chain = [current]
    for _ in range(_MAX_HOPS):
        try:
            target = os.readlink(current)
        except (OSError, ValueError):  # not a link (or gone): the end of the chain as written
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        chain.append(current)
    real = os.path.realpath(path)
    if real not in chain:
        chain.append(real)
    return chain


def watch_dirs(path: str | os.PathLike[str]) -> frozenset[str]:
    """The directories whose entries decide what ``path`` reads: the one it is named in (a link swapped or a
    file renamed over there), and the one of each hop and of the final file (a file edited in place)."""
    return frozenset(d for d in {os.path.dirname(p) for p in path_chain(path)} if os.path.isdir(d))


def _env_forces_polling() -> bool:
    return os.environ.get(RELOAD_POLL_ENV, "").strip().lower() not in ("", "0", "false", "no")


class PolicyWatcher:
    """A daemon thread that reloads the guard's policy whenever what its path reads changes.

    People change a policy file in three ways, and each must take effect: editing it in place, renaming a new
    file over it (editors, config management), and swapping a symlink's target (a Kubernetes ConfigMap swaps
    ``..data`` to a new timestamped directory; the file itself is a link through it). So the watcher does not
    follow a file, it follows the path: it watches the directory the path is named in and the directory of
    every symlink hop and of the final file (re-listed after each change, since a swap moves them), and after
    every batch of events, and every :data:`POLL_INTERVAL_S` without one, compares :func:`file_state` with the
    last one seen. An event that names a file of the chain reloads at once; a changed state reloads too. With
    ``poll=True`` (or :data:`RELOAD_POLL_ENV` set) no events are used at all: the state is compared every
    interval, for file systems that send no events; that needs no ``watchfiles``.

    A reload of an unchanged file is harmless (same hash: nothing happens), so the watcher errs on reloading.
    When the watch is established the file is read once more, so a change made while the thread was starting
    is not missed.
    """

    def __init__(
        self,
        guard: Guard,
        path: str | os.PathLike[str],
        *,
        poll: bool = False,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        if not 0 < interval < 3600:
            raise ValueError(f"the polling interval must be between 0 and 3600 seconds, not {interval!r}")
        self.polling = bool(poll) or _env_forces_polling()
        self._watchfiles = None if self.polling else require_extra("watchfiles", "reload", "Guard(reload=True)")
        self._guard = guard
        self._path = os.path.abspath(path)
        self._interval = float(interval)
        self._state: FileState | None = file_state(self._path)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcp-guard-reload", daemon=True)

    def start(self) -> PolicyWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if self.polling:
                self._poll()
            else:
                self._watch()
        except Exception:  # never expected: say so; the policy in force stays in force
            log.exception("policy watcher for %s stopped", self._path)
        finally:
            self.ready.set()

    def _poll(self) -> None:
        self._check(force=True)
        self.ready.set()
        while not self._stop.wait(self._interval):
            self._check()

    def _watch(self) -> None:
        assert self._watchfiles is not None
        failing = False
        while not self._stop.is_set():
            dirs = watch_dirs(self._path)
            if not dirs:  # even the directory is gone: look again after a while (it may come back)
                self.ready.set()
                if self._stop.wait(self._interval):
                    return
                self._check()
                continue
            try:
                for changes in self._watchfiles.watch(
                    *sorted(dirs),
                    watch_filter=None,  # the default filter drops names like "x~": the path may be named anything
                    stop_event=self._stop,
                    yield_on_timeout=True,  # an empty batch each interval: the watch is up; the state is compared
                    rust_timeout=int(self._interval * 1000),
                    debounce=50,
                    recursive=False,
                    raise_interrupt=False,
                ):
                    if self._stop.is_set():
                        return
                    chain = path_chain(self._path)
                    named = any(os.path.abspath(changed) in chain for _, changed in changes)
                    self._check(force=named or not self.ready.is_set())
                    self.ready.set()
                    if watch_dirs(self._path) != dirs:
                        break  # a link now leads elsewhere: watch the directories it leads through now
            except Exception as exc:  # a watched directory removed under the watch, a watch limit hit...
                # Said once, not every interval while it lasts; the state is still compared meanwhile (polling).
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "policy watch on %s failed (%s); polling meanwhile", ", ".join(sorted(dirs)), exc)
                failing = True
                if self._stop.wait(self._interval):
                    return
                self._check()
            else:
                failing = False

    def _check(self, *, force: bool = False) -> None:
        state = file_state(self._path)  # taken before the read: a write after it changes it again
        if force or state != self._state:
            self._state = state
            self._reload()

    def _reload(self) -> None:
        try:
            reload_policy(self._guard)
        except Exception:  # never let the thread die on one bad reload
            log.exception("policy reload from %s failed", self._path)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


__all__ = [
    "POLL_INTERVAL_S",
    "RELOAD_POLL_ENV",
    "FileState",
    "Policy",
    "PolicyWatcher",
    "file_state",
    "path_chain",
    "reload_policy",
    "watch_dirs",
]
