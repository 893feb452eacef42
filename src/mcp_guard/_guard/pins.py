"""Tool pinning (spec section 11): a lock file of each MCP tool as it was reviewed, and what changed since.

An MCP server can change a tool after a human reviewed it: new instructions hidden in its description, a new
parameter in its input schema, other annotations (a "rug pull"), or add a tool whose name shadows another.
``mcp-guard pin`` writes what each tool looks like now into a lock file; the policy's ``pins`` block names
the file, and every listing an adapter or the proxy sees is compared with it. A tool that differs
(``changed``) or is not in the lock (``new``) is refused with code ``tool_changed``, hidden, or held for a
human, as ``on_change`` / ``on_new`` say, until the lock is updated.

What is pinned is the tool as the MCP server lists it: name, description, input schema and annotations, in
canonical JSON (sorted keys, no insignificant space, ASCII escapes), hashed with SHA-256. Absent and empty are
the same (a missing description is ``""``, missing annotations ``{}``, annotation hints set to ``null`` are
dropped), so that the same tool seen through the MCP SDK, LangChain's adapters or the Agents SDK has one hash.

The lock file (JSON, sorted, stable for review in a diff)::

    {"version": 1,
     "servers": {"notes": {"tools": {"add_note": {"sha256": "...", "description": "...",
                                                  "inputSchema": {...}, "annotations": {...}}}}}}

This module is pure apart from :meth:`Lock.load` and :meth:`Lock.save`: comparing is a dictionary look-up.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp_guard._errors import ConfigurationError

LOCK_VERSION = 1
MAX_LOCK_BYTES = 20 * 1024 * 1024
#: The annotation keys MCP defines (2025-03-26 onwards); others (``_meta``, framework extras) are not pinned.
ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")

PinStatus = Literal["pinned", "changed", "new"]


def canonical_tool(
    name: str,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    annotations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The pinned form of one tool: absent and empty read the same, unknown annotation keys are left out."""
    hints = {k: annotations[k] for k in ANNOTATION_KEYS if annotations and annotations.get(k) is not None}
    return {
        "name": name,
        "description": description or "",
        "inputSchema": dict(input_schema) if input_schema else {},
        "annotations": hints,
    }


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant space, ASCII escapes, no NaN: the text pins and grants hash.

    One encoder made once: ``json.dumps`` with options builds a new one per call (most of a small value's cost).
    """
    return _CANONICAL.encode(value)


def fingerprint(tool: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a :func:`canonical_tool` form.

    A definition that is not plain JSON (NaN, a value JSON cannot hold, nesting past the recursion limit) gets
    a hash of random bytes instead: it never matches a pin, so such a tool always reads as changed or new and
    is refused (fail closed), and a listing that holds one never raises.
    """
    try:
        text = canonical_json(tool).encode()
    except (TypeError, ValueError, RecursionError):
        text = os.urandom(32)
    return "sha256:" + hashlib.sha256(text).hexdigest()


@dataclass(frozen=True, slots=True)
class PinVerdict:
    """How one listed tool compares with the lock: ``pinned`` (as reviewed), ``changed`` or ``new``."""

    tool: str
    server: str | None
    status: PinStatus
    new_hash: str
    old_hash: str | None = None

    @property
    def drifted(self) -> bool:
        return self.status != "pinned"

    def describe(self) -> str:
        where = f"{self.server}/{self.tool}" if self.server else self.tool
        if self.status == "new":
            return f"{where} is not in the lock file (a new tool, or one that shadows another)"
        return f"{where} changed since it was pinned ({self.old_hash} -> {self.new_hash})"


@dataclass
class Lock:
    """The reviewed tools, by server name, then tool name: each entry a :func:`canonical_tool` form plus its
    ``sha256``. Build with :meth:`load`, change with :meth:`pin_server`, write with :meth:`save`."""

    servers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    # -- reading and writing ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Lock:
        """Read a lock file. A missing file is an error unless ``missing_ok`` (then an empty lock)."""
        p = Path(path)
        try:
            with p.open("rb") as f:
                raw = f.read(MAX_LOCK_BYTES + 1)
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise ConfigurationError(f"lock file {p} does not exist: create it with `mcp-guard pin`") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read lock file {p}: {exc.strerror or exc}") from None
        if len(raw) > MAX_LOCK_BYTES:
            raise ConfigurationError(f"lock file {p} is larger than {MAX_LOCK_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ConfigurationError(f"lock file {p} is not valid JSON: {exc}") from None
        return cls.from_dict(doc, source=str(p))

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "lock") -> Lock:
        if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("servers"), dict):
            raise ConfigurationError(
                f"{source}: not an mcp-guard lock file (expected an object with version {LOCK_VERSION} and servers)"
            )
        servers: dict[str, dict[str, dict[str, Any]]] = {}
        for server, body in doc["servers"].items():
            tools = body.get("tools") if isinstance(body, dict) else None
            if not isinstance(tools, dict):
                raise ConfigurationError(f"{source}: /servers/{server}/tools must be an object of tools")
            entries: dict[str, dict[str, Any]] = {}
            for name, entry in tools.items():
                if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                    raise ConfigurationError(f"{source}: /servers/{server}/tools/{name} has no sha256")
                entries[name] = dict(entry)
            servers[server] = entries
        return cls(servers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LOCK_VERSION,
            "servers": {
                server: {"tools": {name: tools[name] for name in sorted(tools)}}
                for server, tools in sorted(self.servers.items())
            },
        }

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a reader or a watching guard never sees half a file)."""
        p = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.dumps())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- pinning and comparing --------------------------------------------------------------------
    def pin_server(self, server: str, tools: Iterable[Mapping[str, Any]]) -> None:
        """Replace what is pinned for ``server`` with ``tools`` (:func:`canonical_tool` forms)."""
        entries: dict[str, dict[str, Any]] = {}
        for tool in tools:
            entry = {k: v for k, v in tool.items() if k != "name"}
            entry["sha256"] = fingerprint(tool)
            entries[tool["name"]] = entry
        self.servers[server] = entries

    def compare(self, tool: Mapping[str, Any], server: str | None) -> PinVerdict:
        """How ``tool`` (a :func:`canonical_tool` form) as listed by ``server`` compares with the lock.

        With no server name (an adapter that does not know it), a tool is pinned when any server's entry of
        that name has its hash, changed when entries of that name exist but none match, new otherwise.
        """
        name = tool["name"]
        new_hash = fingerprint(tool)
        if server is not None and server in self.servers:
            candidates = [self.servers[server][name]] if name in self.servers[server] else []
        elif server is not None and len(self.servers) != 1:
            candidates = []  # a server the lock has never seen: all its tools are new
        else:  # unknown server, or the lock pins exactly one server: look the tool up by name
            candidates = [tools[name] for tools in self.servers.values() if name in tools]
        if not candidates:
            return PinVerdict(name, server, "new", new_hash)
        for entry in candidates:
            if entry["sha256"] == new_hash:
                return PinVerdict(name, server, "pinned", new_hash, new_hash)
        return PinVerdict(name, server, "changed", new_hash, candidates[0]["sha256"])

    def diff_server(self, server: str, tools: Iterable[Mapping[str, Any]]) -> list[str]:
        """Readable lines saying how the live ``tools`` of ``server`` differ from the lock (empty: none)."""
        pinned = self.servers.get(server)
        if pinned is None:
            return [f"server {server!r} is not in the lock file: pin it with `mcp-guard pin --server {server} ...`"]
        lines: list[str] = []
        live = {t["name"]: t for t in tools}
        for name in sorted(live.keys() - pinned.keys()):
            lines.append(f"+ {server}/{name}: new tool (not reviewed)")
            lines.extend(_indent(_describe_new(live[name])))
        for name in sorted(pinned.keys() - live.keys()):
            lines.append(f"- {server}/{name}: removed")
        for name in sorted(live.keys() & pinned.keys()):
            old, new = pinned[name], live[name]
            if old["sha256"] == fingerprint(new):
                continue
            lines.append(f"~ {server}/{name}: changed ({old['sha256']} -> {fingerprint(new)})")
            lines.extend(_indent(_field_diff(old, new)))
        return lines


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _indent(lines: Iterable[str]) -> list[str]:
    return ["    " + line for line in lines]


def _describe_new(tool: Mapping[str, Any]) -> list[str]:
    lines = [f"description: {line}" for line in (tool.get("description") or "").splitlines()[:5]]
    props = (tool.get("inputSchema") or {}).get("properties")
    if isinstance(props, dict) and props:
        lines.append("parameters: " + ", ".join(sorted(props)))
    return lines


def _field_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if (old.get("description") or "") != (new.get("description") or ""):
        lines.append("description:")
        lines.extend(
            "  " + line.rstrip("\n")
            for line in difflib.unified_diff(
                (old.get("description") or "").splitlines(),
                (new.get("description") or "").splitlines(),
                "pinned",
                "live",
                lineterm="",
            )
        )
    for key in ("inputSchema", "annotations"):
        before, after = old.get(key) or {}, new.get(key) or {}
        if before != after:
            lines.append(f"{key}:")
            lines.extend("  " + change for change in _json_changes(before, after, ""))
    return lines


def _json_changes(before: Any, after: Any, path: str) -> list[str]:
    """JSON-pointer lines for what differs between two JSON values (added, removed, changed)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(before.keys() | after.keys()):
            sub = f"{path}/{key}"
            if key not in after:
                out.append(f"- {sub}: {_shown(before[key])}")
            elif key not in before:
                out.append(f"+ {sub}: {_shown(after[key])}")
            else:
                out.extend(_json_changes(before[key], after[key], sub))
        return out
    if before == after and type(before) is type(after):
        return []
    return [f"~ {path or '/'}: {_shown(before)} -> {_shown(after)}"]


def _shown(value: Any) -> str:
    """A value for a person reading the diff: its canonical JSON, or its repr when it is not plain JSON."""
    try:
        return canonical_json(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:200]


# -- at run time: what the guard has seen listed -----------------------------------------------------------

PinAction = Literal["deny", "hide", "require_approval"]


class PinWatch:
    """The guard's side of pinning: the lock in force, and the verdict on each tool as last listed.

    Listings are rare (a session start, a ``tools/list_changed``), calls are many: :meth:`listed` compares and
    remembers, :meth:`verdict` is a dictionary look-up. The lock file is read again when it changes on disk
    (``mcp-guard pin`` after a review), checked at each listing and whenever a drifted tool is called, so a
    reviewed tool is admitted again without a restart.
    """

    def __init__(self, path: Path, on_change: PinAction, on_new: PinAction) -> None:
        self.path = path
        self.on_change = on_change
        self.on_new = on_new
        self._stamp: tuple[int, int, int] | None = None
        self.lock = Lock()
        self._refresh()
        # (server, tool) -> (canonical form, verdict); the form is kept to compare again after a lock update.
        self._seen: dict[tuple[str | None, str], tuple[dict[str, Any], PinVerdict]] = {}

    @classmethod
    def for_policy(cls, policy: Any, previous: PinWatch | None = None) -> PinWatch | None:
        """The watch a policy's ``pins`` block asks for (None without one), keeping what ``previous`` saw."""
        pins = getattr(policy.document, "pins", None)
        if pins is None:
            return None
        base = Path(policy.source).parent if getattr(policy, "source", None) else Path.cwd()
        path = Path(pins.file) if Path(pins.file).is_absolute() else base / pins.file
        watch = cls(path, pins.on_change, pins.on_new)
        if previous is not None:
            for (server, _name), (form, _verdict) in previous._seen.items():
                watch.listed(form, server)
        return watch

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ConfigurationError(
                f"the policy's pins file {self.path} does not exist: write it with "
                f"`mcp-guard pin --lock {self.path} --server NAME -- COMMAND` after reviewing the tools"
            ) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self.lock = Lock.load(self.path)
            self._stamp = stamp

    def _maybe_refresh(self) -> bool:
        """Read the lock again if it changed on disk; True when it did. A lock that went missing or broke
        keeps the last good one in force (logged), so a half-done edit never admits a drifted tool."""
        before = self._stamp
        try:
            self._refresh()
        except ConfigurationError as exc:
            import logging

            logging.getLogger("mcp_guard").warning("pins: %s; the previous lock stays in force", exc)
            return False
        return self._stamp != before

    def listed(self, form: Mapping[str, Any], server: str | None) -> PinVerdict:
        """Compare one listed tool (a :func:`canonical_tool` form) and remember the verdict."""
        if self._maybe_refresh():
            self._recompare()
        verdict = self.lock.compare(form, server)
        self._seen[(server, form["name"])] = (dict(form), verdict)
        return verdict

    def _recompare(self) -> None:
        for key, (form, _old) in list(self._seen.items()):
            self._seen[key] = (form, self.lock.compare(form, key[0]))

    def verdict(self, tool: str, server: str | None) -> PinVerdict | None:
        """The verdict on ``tool`` as last listed (None: never listed through this guard)."""
        seen = self._seen.get((server, tool))
        if seen is None and server is not None:
            seen = self._seen.get((None, tool))
        if seen is None and server is None:  # the caller does not know the server: any listing of that name
            drifted = [s for (_srv, name), s in self._seen.items() if name == tool]
            seen = next((s for s in drifted if s[1].drifted), drifted[0] if drifted else None)
        if seen is None:
            return None
        if seen[1].drifted and self._maybe_refresh():  # reviewed and pinned again since?
            self._recompare()
            return self.verdict(tool, server)
        return seen[1]

    def action_for(self, verdict: PinVerdict) -> PinAction:
        return self.on_change if verdict.status == "changed" else self.on_new


def pinned_decision(pins: PinWatch, decision: Any, tool: str, server: str | None) -> Any:
    """``decision`` for a call of a tool whose listing drifted from the lock: refused (``deny``/``hide``) or
    held for a human (``require_approval``), with both hashes for the audit. A call already refused stays
    refused; a tool never listed through the guard (a plain function) is not pinned and passes unchanged."""
    verdict = pins.verdict(tool, server)
    if verdict is None or not verdict.drifted or decision.denied:
        return decision
    pointer = "/pins/on_change" if verdict.status == "changed" else "/pins/on_new"
    hashes = (verdict.old_hash, verdict.new_hash)
    why = verdict.describe() + "; review it, then update the lock with `mcp-guard pin`"
    if pins.action_for(verdict) == "require_approval":
        return decision.replace(action="require_approval", rule=pointer, reason=why, pin=hashes)
    return decision.violation("tool_changed", reason=why, rule=pointer).replace(pin=hashes)


def drifted_refusal(guard: Any, tool: str, server: str | None) -> Any:
    """The refusal of a call to ``tool`` that an adapter kept from the model because its listing drifted from
    the lock (``hide``), for paths that answer such a call without the pipeline (the Agents SDK's answer to a
    tool it was not shown): ``tool_changed`` with both hashes, as the pipeline would refuse it. None when the
    guard does not pin, or the tool has not drifted, or the policy says ``require_approval`` for it.
    """
    from mcp_guard._policy.decision import Decision

    pins = guard._pipeline.pins  # the Guard's own package: it holds its pipeline, which holds the live pins
    if pins is None:
        return None
    base = Decision.allow(tool, server=server, policy=guard.policy.hash)
    decided = pinned_decision(pins, base, tool, server)
    return decided if decided.denied else None
