"""Audit: one JSON object per call, whatever its outcome, written to one or more sinks.

A sink is anything with ``write(event: Mapping[str, Any]) -> None`` (:class:`AuditSink`). Built-ins:
:class:`JsonlSink` (a file, whole lines under concurrent writers), :class:`LoggingSink`,
:class:`MemorySink`, and :class:`OTelSink` (extra ``otel``). Argument values are never written in clear:
each is replaced by a short hash, or by ``"[redacted]"`` for the rule's ``redact`` paths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mcp_guard._errors import require_extra

log = logging.getLogger("mcp_guard.audit")

REDACTED = "[redacted]"


@runtime_checkable
class AuditSink(Protocol):
    """Receives one event per call. Must not raise (the guard logs and drops a sink's errors)."""

    def write(self, event: Mapping[str, Any]) -> None: ...


# One encoder for every hash: json.dumps with options builds a new encoder per call, which was most of the
# audit's cost per event.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=repr, ensure_ascii=False, separators=(",", ":"))
_LINE = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


def _hash_value(value: Any) -> str:
    try:
        text = _CANONICAL.encode(value)
    except (TypeError, ValueError):  # keys that do not sort together ({1: .., "a": ..}), circular values
        text = repr(value)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _redacted_paths(args: Mapping[str, Any], redact: Iterable[str]) -> set[str]:
    # Rule paths are written "args.a.b"; the top-level argument key is what we blank out, and nested
    # paths redact their top-level container too, so no part of a secret is hashed into the log.
    keys: set[str] = set()
    for path in redact:
        if path == "args":  # the whole argument object
            keys.update(args)
            continue
        parts = path.split(".")
        if parts[0] == "args":
            parts = parts[1:]
        if parts and parts[0]:
            keys.add(parts[0])
    return keys


def _leaves(value: Any, out: list[str], depth: int = 0) -> None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if text:
            out.append(text)
    elif depth < 8 and isinstance(value, Mapping):
        for item in value.values():
            _leaves(item, out, depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            _leaves(item, out, depth + 1)


def scrub(text: str | None, args: Mapping[str, Any], redact: Sequence[str]) -> str | None:
    """``text`` with every value under a ``redact`` path replaced by ``[redacted]``.

    Denial reasons may quote the argument that failed a check (``deny_if args.card matches ... (got
    4111...)``); the audit log must not carry a redacted value that way either. Longest values first, so
    a value that contains another is blanked whole.
    """
    if not text or not redact:
        return text
    values: list[str] = []
    for key in _redacted_paths(args, redact):
        if key in args:
            _leaves(args[key], values)
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def summarize_args(args: Mapping[str, Any], redact: Sequence[str] = ()) -> dict[str, str]:
    """Argument keys with hashed values, or ``[redacted]`` for the ``redact`` paths."""
    hidden = _redacted_paths(args, redact) if redact else set()
    return {k: (REDACTED if k in hidden else _hash_value(v)) for k, v in args.items()}


class MemorySink:
    """Keeps events in a list (``.events``): for tests and notebooks."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))


class LoggingSink:
    """Writes each event as JSON text to a :mod:`logging` logger (``mcp_guard.audit`` by default)."""

    def __init__(self, logger: logging.Logger | str = "mcp_guard.audit", level: int = logging.INFO) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level

    def write(self, event: Mapping[str, Any]) -> None:
        self.logger.log(self.level, "%s", _LINE.encode(event))


class JsonlSink:
    """Appends one JSON line per event to a file.

    Each line is written with a single ``os.write`` on a descriptor opened with ``O_APPEND``, so lines
    stay whole when many threads or processes write the same file at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def write(self, event: Mapping[str, Any]) -> None:
        # "replace": a lone surrogate (possible in model-made text) must not make the line invalid UTF-8.
        line = (_LINE.encode(event) + "\n").encode("utf-8", "replace")
        with self._lock:
            fd = self._open()
            written = os.write(fd, line)
        if written != len(line):  # pragma: no cover - regular files take whole writes
            log.error("audit line to %s was cut short (%d of %d bytes)", self.path, written, len(line))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class OTelSink:
    """Records each event as a short span ``mcp_guard <tool>`` (a child of the current span, if any), with the
    event's fields as ``mcp_guard.*`` attributes (extra ``otel``).

    ``tracer_provider`` defaults to the global one. Non-scalar fields (the argument summary) are JSON text.
    """

    def __init__(self, tracer_name: str = "mcp_guard", *, tracer_provider: Any = None) -> None:
        trace = require_extra("opentelemetry.trace", "otel", "OTelSink")
        self._trace = trace
        self._tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)

    def write(self, event: Mapping[str, Any]) -> None:
        attributes = {
            f"mcp_guard.{k}": (v if isinstance(v, (str, bool, int, float)) else _LINE.encode(v))
            for k, v in event.items()
            if v is not None
        }
        with self._tracer.start_as_current_span(f"mcp_guard {event.get('tool')}", attributes=attributes):
            pass


AuditSpec = AuditSink | str | os.PathLike[str] | Sequence[AuditSink] | None


def audit_sinks(spec: Any) -> tuple[AuditSink, ...]:
    """Coerce the ``audit=`` argument: ``None``; a path (JSONL file); ``"logging"``; a sink; a list of those."""
    if spec is None:
        return ()
    if isinstance(spec, str) and spec == "logging":
        return (LoggingSink(),)
    if isinstance(spec, (str, os.PathLike)):
        return (JsonlSink(spec),)
    if isinstance(spec, AuditSink):
        return (spec,)
    if isinstance(spec, Sequence):
        sinks: list[AuditSink] = []
        for item in spec:
            sinks.extend(audit_sinks(item))
        return tuple(sinks)
    raise TypeError(f"audit= takes a path, 'logging', a sink with .write(event), or a list of them; got {spec!r}")


def emit(sinks: Sequence[AuditSink], event: Mapping[str, Any]) -> None:
    """Write ``event`` to every sink; a failing sink is logged, never raised into the agent run."""
    for sink in sinks:
        try:
            sink.write(event)
        except Exception:
            log.exception("audit sink %r failed", sink)
