"""Reload follows the path the way people change files (spec section 10).

Each way of changing a policy file is judged by a real call: before the change the tool runs, after it the guard
refuses it (and back again), waited for by polling the call for a few seconds, never by a fixed sleep. Every
way is run with file events (``watchfiles``) and with the polling fallback forced (file systems without
events: NFS, some container mounts), so each mechanism is proved on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink

ALLOW = {"version": "1", "default": "deny", "tools": {"t": {"action": "allow"}}}
DENY = {"version": "1", "default": "deny", "tools": {"t": {"action": "deny", "reason": "nope"}}}


def text(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


class Tool:
    """The far side: counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return "ok"


def runs(guard: Guard, tool: Tool) -> bool:
    """Whether a real call of ``t`` reaches the tool now."""
    before = tool.calls
    result = guard.invoke("t", {}, tool)
    ran = tool.calls == before + 1
    assert ran == (result == "ok"), result
    return ran


def until(guard: Guard, tool: Tool, *, ran: bool, timeout: float = 5.0) -> float:
    """Call ``t`` until it runs (or is refused); the seconds that took. Fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if runs(guard, tool) is ran:
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"the change did not take effect within {timeout} s (calls {'refused' if ran else 'admitted'})")


# -- the ways people change a file ------------------------------------------------------------------------
# Each layout returns the path the guard is given and a function that puts a new document in force there.

Change = Callable[[dict[str, Any]], None]


def edit_in_place(root: Path) -> tuple[Path, Change]:
    path = root / "policy.json"
    path.write_text(text(ALLOW))
    inode = path.stat().st_ino

    def change(doc: dict[str, Any]) -> None:
        with path.open("r+", encoding="utf-8") as fh:  # what `>` in a shell or a plain editor save does
            fh.seek(0)
            fh.truncate()
            fh.write(text(doc))
        assert path.stat().st_ino == inode  # the same file, rewritten

    return path, change


def rename_over(root: Path) -> tuple[Path, Change]:
    path = root / "policy.json"
    path.write_text(text(ALLOW))
    count = [0]

    def change(doc: dict[str, Any]) -> None:
        count[0] += 1
        tmp = root / f".policy.json.{count[0]}.tmp"
        tmp.write_text(text(doc))
        os.replace(tmp, path)  # atomic rename-over: editors, config management, `mv`

    return path, change


def symlink_swap(root: Path) -> tuple[Path, Change]:
    (root / "v0.json").write_text(text(ALLOW))
    path = root / "policy.json"
    path.symlink_to("v0.json")
    count = [0]

    def change(doc: dict[str, Any]) -> None:
        count[0] += 1
        (root / f"v{count[0]}.json").write_text(text(doc))
        link = root / "policy.json.tmp"
        link.symlink_to(f"v{count[0]}.json")
        os.replace(link, path)  # the link itself now points elsewhere; no file it pointed to changed

    return path, change


def symlink_elsewhere_edited(root: Path) -> tuple[Path, Change]:
    # The link lives in one directory, the file it names in another, which is edited in place.
    (root / "real").mkdir()
    (root / "conf").mkdir()
    target = root / "real" / "policy.json"
    target.write_text(text(ALLOW))
    path = root / "conf" / "policy.json"
    path.symlink_to(target)

    def change(doc: dict[str, Any]) -> None:
        with target.open("r+", encoding="utf-8") as fh:
            fh.seek(0)
            fh.truncate()
            fh.write(text(doc))

    return path, change


def configmap(root: Path) -> tuple[Path, Change]:
    # How the kubelet lays out a mounted ConfigMap and updates it: each version in its own timestamped
    # directory, `..data` a symlink to the current one, the key a symlink through `..data`. An update writes
    # a new directory, points `..data_tmp` at it, renames that over `..data` (atomic) and deletes the old one.
    version = root / "..2024_01_01_00_00_00.000000000"
    version.mkdir()
    (version / "policy.json").write_text(text(ALLOW))
    (root / "..data").symlink_to(version.name)
    path = root / "policy.json"
    path.symlink_to("..data/policy.json")
    state = {"current": version, "n": 0}

    def change(doc: dict[str, Any]) -> None:
        state["n"] = int(str(state["n"])) + 1
        new = root / f"..2024_01_01_00_00_{state['n']:02d}.000000000"
        new.mkdir()
        (new / "policy.json").write_text(text(doc))
        tmp = root / "..data_tmp"
        tmp.symlink_to(new.name)
        os.replace(tmp, root / "..data")
        shutil.rmtree(Path(str(state["current"])))
        state["current"] = new

    return path, change


LAYOUTS = {
    "edit_in_place": edit_in_place,
    "rename_over": rename_over,
    "symlink_swap": symlink_swap,
    "symlink_elsewhere_edited": symlink_elsewhere_edited,
    "configmap": configmap,
}


@pytest.fixture(params=["events", "poll"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def watched(tmp_path: Path, how: str) -> Iterator[Callable[[str], tuple[Guard, Change, MemorySink]]]:
    guards: list[Guard] = []

    def make(layout: str) -> tuple[Guard, Change, MemorySink]:
        path, change = LAYOUTS[layout](tmp_path)
        sink = MemorySink()
        guard = Guard(str(path), audit=sink, reload="poll" if how == "poll" else True)
        guards.append(guard)
        assert guard._watcher.ready.wait(10)
        return guard, change, sink

    yield make
    for guard in guards:
        guard.close()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_way_of_changing_the_file_takes_effect(watched: Any, layout: str) -> None:
    guard, change, sink = watched(layout)
    tool = Tool()
    assert runs(guard, tool)
    change(DENY)
    until(guard, tool, ran=False)
    assert guard.policy.evaluate("t").code == "denied"
    change(ALLOW)  # and back: the second change is followed too (a new directory, a new link, a new inode)
    until(guard, tool, ran=True)
    reloads = [e for e in sink.events if e.get("event") == "policy_reload"]
    assert [e["ok"] for e in reloads] == [True, True]


def test_a_broken_version_through_a_symlink_keeps_the_old_policy(tmp_path: Path, how: str) -> None:
    path, change = configmap(tmp_path)
    sink = MemorySink()
    guard = Guard(str(path), audit=sink, reload="poll" if how == "poll" else True)
    try:
        assert guard._watcher.ready.wait(10)
        tool = Tool()
        change(DENY)
        until(guard, tool, ran=False)
        old = guard.policy.hash
        new = tmp_path / "..2024_09_09_00_00_00.000000000"
        new.mkdir()
        (new / "policy.json").write_text("{broken")
        (tmp_path / "..data_tmp").symlink_to(new.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        deadline = time.monotonic() + 5
        while not any(e.get("ok") is False for e in sink.events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(e.get("event") == "policy_reload" and e.get("ok") is False for e in sink.events)
        assert guard.policy.hash == old
        assert not runs(guard, tool)
    finally:
        guard.close()


def test_polling_needs_no_watchfiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if the 'reload' extra were not installed
    path, change = symlink_swap(tmp_path)
    guard = Guard(str(path), reload="poll")
    try:
        assert guard._watcher.ready.wait(10)
        tool = Tool()
        change(DENY)
        until(guard, tool, ran=False)
    finally:
        guard.close()


def test_the_environment_forces_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `mcp-guard proxy --reload` passes reload=True; a deployment on a file system without events sets this.
    monkeypatch.setenv("MCP_GUARD_RELOAD_POLL", "1")
    path, change = rename_over(tmp_path)
    guard = Guard(str(path), reload=True)
    try:
        assert guard._watcher.polling
        assert guard._watcher.ready.wait(10)
        tool = Tool()
        change(DENY)
        until(guard, tool, ran=False)
    finally:
        watcher = guard._watcher
        guard.close()
    assert not watcher._thread.is_alive()


def test_reload_takes_true_false_or_poll(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(text(ALLOW))
    with pytest.raises(ValueError, match="reload"):
        Guard(str(path), reload="sometimes")  # type: ignore[arg-type]
