"""Audit: one JSON object per call, whatever its outcome, written to one or more sinks.

A sink is anything with ``write(event: Mapping[str, Any]) -> None`` (:class:`AuditSink`). Built-ins:
:class:`JsonlSink` (a file, whole lines under concurrent writers), :class:`LoggingSink`,
:class:`MemorySink`, and :class:`OTelSink` (extra ``otel``).

Argument values are never written in clear. Each argument is described by its JSON type and size
(:func:`summarize_args`); with a key the deployment supplies (``Guard(audit_key=...)`` or the environment
variable ``MCP_GUARD_AUDIT_KEY``) it also gets an HMAC-SHA256 fingerprint, so equal values can be matched
across events without a short value (a PIN, an amount) being recoverable by guessing. Values under a rule's
``redact`` paths read ``"[redacted]"``, and :func:`scrub` blanks any part of them (4 characters or more,
escaped or not) that a reason quotes.

Everything here is iterative and bounded: an argument nested 10,000 deep or 10 MB long is summarised in
bounded time and never makes building the event raise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import random
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mcp_guard._calls.call import Admission, Outcome
from mcp_guard._errors import ConfigurationError, require_extra
from mcp_guard._policy.decision import Decision

log = logging.getLogger("mcp_guard.audit")

REDACTED = "[redacted]"
AUDIT_KEY_ENV = "MCP_GUARD_AUDIT_KEY"

# Bounds on the work spent describing one argument or scanning the redacted values of one call. Beyond
# them the summary says so ("truncated") and a reason that might quote a redacted value is blanked whole.
_MAX_NODES = 10_000
_MAX_FINGERPRINT_BYTES = 1 << 20
_MAX_SECRET_CHARS = 64 * 1024
_GRAM = 4  # a redacted value may not appear in part: no run of this many of its characters survives


@runtime_checkable
class AuditSink(Protocol):
    """Receives one event per call. May raise: the guard counts and logs a failed write (``audit_failure``)."""

    def write(self, event: Mapping[str, Any]) -> None: ...


_LINE = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


# -- describing arguments ------------------------------------------------------------------------------


_EXACT_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    dict: "object",
    list: "array",
    tuple: "array",
}
_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (Mapping, "object"),
    ((list, tuple), "array"),
)


def _json_type(value: Any) -> str:
    kind = _EXACT_TYPES.get(type(value))  # one lookup for the usual, exact JSON types
    if kind is None:  # subclasses (an IntEnum, an OrderedDict) and anything else
        kind = next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)
    return kind


def _fingerprint(value: Any, key: bytes) -> str | None:
    """HMAC-SHA256 of a canonical, length-prefixed encoding of ``value``; ``None`` when it is too big to read.

    Iterative (no recursion limit), key order does not matter, and the budget bounds the time spent.
    """
    mac = hmac.new(key, digestmod=hashlib.sha256)
    budget_nodes, budget_bytes = _MAX_NODES, _MAX_FINGERPRINT_BYTES
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        budget_nodes -= 1
        if budget_nodes < 0:
            return None
        if isinstance(item, bytes):  # a pre-encoded object key
            chunk = item
        elif isinstance(item, str):
            chunk = b"s" + _lp(item.encode("utf-8", "surrogatepass"))
        elif item is None or isinstance(item, (bool, int, float)):
            chunk = b"v" + _lp(repr(item).encode("ascii", "backslashreplace"))
        elif isinstance(item, Mapping):
            try:
                items = sorted(((str(k), v) for k, v in item.items()), key=lambda kv: kv[0])
            except Exception:
                return None
            chunk = b"o" + struct.pack(">Q", len(items))
            for k, v in reversed(items):
                stack.append(v)
                stack.append(b"k" + _lp(k.encode("utf-8", "surrogatepass")))
        elif isinstance(item, (list, tuple)):
            chunk = b"a" + struct.pack(">Q", len(item))
            stack.extend(reversed(item))
        else:
            chunk = b"r" + _lp(type(item).__qualname__.encode("utf-8", "replace"))
        budget_bytes -= len(chunk)
        if budget_bytes < 0:
            return None
        mac.update(chunk)
    return "hmac-sha256:" + mac.hexdigest()[:32]


def _lp(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def describe_value(value: Any, key: bytes | None = None) -> dict[str, Any]:
    """Type and size of one argument (``len`` for a string, ``items`` for an array, ``keys`` for an object),
    plus ``fp``, an HMAC fingerprint, when ``key`` is given. Never raises."""
    try:
        kind = _json_type(value)
        out: dict[str, Any] = {"type": kind}
        if kind == "string":
            out["len"] = len(value)
        elif kind == "array":
            out["items"] = len(value)
        elif kind == "object":
            out["keys"] = len(value)
        if key is not None:
            fp = _fingerprint(value, key)
            if fp is None:
                out["truncated"] = True
            else:
                out["fp"] = fp
        return out
    except Exception:  # a mapping whose len() or items() raises: still one event
        return {"type": "unknown"}


def redacted_paths(args: Mapping[str, Any], redact: Iterable[str]) -> set[str]:
    # Rule paths are written "args.a.b"; the top-level argument key is what we blank out, and nested
    # paths redact their top-level container too, so no part of a secret is described in the log.
    keys: set[str] = set()
    for path in redact:
        if path == "args":  # the whole argument object
            keys.update(str(k) for k in args)
            continue
        parts = path.split(".")
        if parts[0] == "args":
            parts = parts[1:]
        if parts and parts[0]:
            keys.add(parts[0])
    return keys


def summarize_args(
    args: Mapping[str, Any], redact: Sequence[str] = (), key: bytes | None = None
) -> dict[str, Any] | str:
    """Argument keys with their type and size (and a keyed fingerprint), or ``[redacted]`` for ``redact`` paths.

    Never raises: arguments that cannot be read at all are summarised as ``"[unreadable]"``.
    """
    try:
        hidden = redacted_paths(args, redact) if redact else set()
        out: dict[str, Any] = {}
        for n, (k, v) in enumerate(args.items()):
            if n >= _MAX_NODES:
                out["..."] = {"truncated": True, "keys": len(args)}
                break
            name = str(k)
            out[name] = REDACTED if name in hidden else describe_value(v, key)
        return out
    except Exception:
        return "[unreadable]"


# -- scrubbing redacted values out of text --------------------------------------------------------------


def _secret_leaves(args: Mapping[str, Any], redact: Sequence[str]) -> list[str] | None:
    """The text forms of every scalar under a redacted key; ``None`` when there is too much to scan."""
    stack: list[Any] = [args[k] for k in redacted_paths(args, redact) if k in args]
    leaves: list[str] = []
    nodes, chars = 0, 0
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            return None
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, (str, int, float)):
            text = item if isinstance(item, str) else repr(item)
            chars += len(text)
            if chars > _MAX_SECRET_CHARS:
                return None
            leaves.append(text)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            leaves.append(repr(item))
    return leaves


def _forms(text: str) -> set[str]:
    # The ways a value can be quoted: as is, JSON-escaped, repr-escaped, unicode-escaped (a reason may
    # show any of them), each with its escapes doubled once more (a JSON line of a repr).
    forms = {
        text,
        json.dumps(text, ensure_ascii=False)[1:-1],
        json.dumps(text)[1:-1],
        repr(text)[1:-1],
        text.encode("unicode_escape").decode("ascii"),
    }
    forms |= {f.replace("\\", "\\\\") for f in list(forms)}
    return forms


def scrub(text: str | None, args: Mapping[str, Any], redact: Sequence[str]) -> str | None:
    """``text`` with every value under a ``redact`` path, whole or in part, replaced by ``[redacted]``.

    Denial reasons may quote the argument that failed a check, cut short or escaped (``deny_if args.card
    matches ... (got '4111…')``); no run of 4 or more characters of a redacted value, in any of its escaped
    forms, survives, and a shorter value is blanked where it appears whole. Over-blanking is the safe
    side. When the redacted values are too large to scan, the whole text is blanked. Never raises.
    """
    if not text or not redact:
        return text
    try:
        leaves = _secret_leaves(args, redact)
        if leaves is None:
            return REDACTED
        if not leaves:
            return text
        grams: set[str] = set()
        short: set[str] = set()
        for leaf in leaves:
            for form in _forms(leaf):
                if len(form) >= _GRAM:
                    grams.update(form[i : i + _GRAM] for i in range(len(form) - _GRAM + 1))
                elif form:
                    short.add(form)
        covered = bytearray(len(text))
        for i in range(len(text) - _GRAM + 1):
            if text[i : i + _GRAM] in grams:
                covered[i : i + _GRAM] = b"\x01" * _GRAM
        for value in short:
            start = text.find(value)
            while start >= 0:
                covered[start : start + len(value)] = b"\x01" * len(value)
                start = text.find(value, start + 1)
        if not any(covered):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if covered[i]:
                while i < len(text) and covered[i]:
                    i += 1
                out.append(REDACTED)
            else:
                j = i
                while j < len(text) and not covered[j]:
                    j += 1
                out.append(text[i:j])
                i = j
        return "".join(out)
    except Exception:
        return REDACTED


# -- event fields ----------------------------------------------------------------------------------------


_second: tuple[int, str] = (-1, "")  # the last whole second formatted: events come many per second


def iso_time(seconds: float) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``, e.g. ``2026-11-25T22:04:28.123456Z``."""
    global _second
    try:
        whole = math.floor(seconds)
        cached = _second
        if cached[0] == whole:
            prefix = cached[1]
        else:
            prefix = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            _second = (whole, prefix)
        return f"{prefix}.{min(round((seconds - whole) * 1e6), 999_999):06d}Z"
    except (OverflowError, OSError, ValueError):  # an injected clock far outside the calendar (or NaN)
        return f"{seconds!r}"


_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID4_SET = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant


def new_call_id() -> str:
    """A random UUID4 as text. An id, not a secret: drawn from :mod:`random` (reseeded in forked children),
    as ``uuid.uuid4()``'s ``os.urandom`` system call was most of an audit event's cost."""
    h = f"{(random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_otel: Any = None  # opentelemetry.trace once looked up; False when it is not installed


def trace_ids() -> tuple[str, str] | None:
    """The active OpenTelemetry span's (trace_id, span_id) as hex, or ``None``.

    Imports opentelemetry only when already imported by the application (it started the span, so it did):
    ``import mcp_guard`` never pulls it in, and a process without OpenTelemetry pays one dict lookup.
    """
    global _otel
    if _otel is None:
        module = sys.modules.get("opentelemetry.trace")
        if module is None:
            return None
        _otel = module
    try:
        context = _otel.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"
    except Exception:
        return None


def audit_key(key: str | bytes | None) -> bytes | None:
    """The fingerprint key: ``key`` if given, else ``$MCP_GUARD_AUDIT_KEY``, else ``None`` (no fingerprints)."""
    if key is None:
        key = os.environ.get(AUDIT_KEY_ENV) or None
    if key is None:
        return None
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not data:
        raise ConfigurationError("audit_key must not be empty")
    return data


# -- one call's event ------------------------------------------------------------------------------------


class CallEvent:
    """One call's audit event, taken down when the call is recorded and built when a sink first needs it.

    Recording notes what the event says (the admission's fields, the outcome, the time, the latency, the
    active span) in a few hundred nanoseconds; describing the arguments, scrubbing the reason and formatting
    the time wait for :meth:`data`. A sink that writes at once (a file, a log) asks for it at once; a
    :class:`MemorySink` asks when its events are read, so a call recorded in memory pays only for the note.
    """

    # What the event says, copied out of the admission when the call is recorded (the admission changes later:
    # a closed-mode "admitted" event is written before the tool runs and the attempts are counted).
    __slots__ = (
        "_data",
        "approval",
        "attempts",
        "call",
        "decision",
        "error_name",
        "fail_open",
        "key",
        "latency",
        "now",
        "outcome",
        "policy_hash",
        "result_note",
        "shadow",
        "trace_ids",
    )

    def __init__(
        self,
        admission: Admission,
        outcome: Outcome,
        error: BaseException | None,
        now: float,
        policy_hash: str | None,
        key: bytes | None,
    ) -> None:
        self.latency = time.perf_counter() - admission.started
        self.call = admission.call
        self.decision = admission.decision
        self.outcome = outcome
        self.error_name = type(error).__name__ if error is not None else None
        self.now = now
        self.policy_hash = policy_hash
        self.key = key
        self.approval = admission.approval
        self.fail_open = admission.fail_open
        self.attempts = admission.attempts
        self.shadow = admission.shadow
        self.trace_ids = trace_ids()
        self.result_note = admission.result_note
        self._data: dict[str, Any] | None = None

    def data(self) -> dict[str, Any]:
        """The event as a dict (built once). Never raises: an event that cannot be built is cut down."""
        if self._data is None:
            try:
                self._data = self._build()
            except Exception as exc:  # auditing must never break the call it records; the event is cut down
                log.error("could not build the audit event for %s (%s)", self.call.tool, type(exc).__name__)
                self._data = {"time": iso_time(self.now), "tool": str(self.call.tool), "outcome": self.outcome}
        return self._data

    def _build(self) -> dict[str, Any]:
        call, decision, approval = self.call, self.decision, self.approval
        args = call.args if isinstance(call.args, Mapping) else {}
        event: dict[str, Any] = {
            "time": iso_time(self.now),
            "call_id": call.call_id if call.call_id is not None else new_call_id(),
            "tool": call.tool,
            "server": call.server,
            "identity": call.identity,
            "session": call.session,
            "decision": decision.action,
            "code": decision.code,
            "rule": decision.rule,
            "reason": scrub(decision.reason, args, decision.redact),
            "policy": decision.policy or self.policy_hash,  # the policy that decided, even across a reload
            "args": summarize_args(args, decision.redact, self.key),
            "outcome": self.outcome,
            "latency_ms": round(self.latency * 1000.0, 3),
        }
        if call.run_id is not None:
            event["run_id"] = call.run_id
        if self.trace_ids is not None:
            event["trace_id"], event["span_id"] = self.trace_ids
        if approval is not None:
            event["approval"] = approval.kind
            if approval.grant is not None:  # a grant used (no human asked) or made by this yes
                event["grant"] = approval.grant
                if approval.grants:
                    # "session", "ttl" (any session, for ttl_s), or "session+ttl" (both bounds).
                    scope = "ttl" if approval.scope == "once" else approval.scope
                    event["grant_scope"] = scope if approval.ttl_s is None or scope == "ttl" else f"{scope}+ttl"
                else:
                    event["approval"] = "grant"
        if self.fail_open:
            event["fail_open"] = True
        if self.attempts > 1:
            event["attempts"] = self.attempts
        if decision.retry_after_s is not None:
            event["retry_after_s"] = decision.retry_after_s
        if self.error_name is not None:
            event["error"] = self.error_name
        if decision.pin is not None:  # a tool that is not the one reviewed: the hashes, for the reviewer
            event["pin"] = {"pinned": decision.pin[0], "listed": decision.pin[1]}
        if self.shadow is not None:
            add_shadow_fields(event, self.shadow, args)
        if self.result_note is not None:
            event["result"] = self.result_note
        return event


def add_shadow_fields(event: dict[str, Any], would: Decision, args: Mapping[str, Any]) -> None:
    """Mark the audit event of a call decided in shadow with what enforcement would have written."""
    event["shadow"] = True
    event["decision"] = would.action
    event["code"] = would.code
    event["rule"] = would.rule
    event["reason"] = scrub(would.reason, args, would.redact)
    if would.code is not None or would.action != "allow":
        event["would_code"] = would.code
        event["would_rule"] = would.rule
    if would.retry_after_s is not None:
        event["would_retry_after_s"] = would.retry_after_s


# -- sinks ----------------------------------------------------------------------------------------------


class MemorySink:
    """Keeps events in a list (``.events``): for tests and notebooks.

    A call's event is built when ``events`` is next read, not while the call runs (see :class:`CallEvent`).
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        # Writers only append here (a deque's append is atomic: no lock on the call path); readers move what
        # arrived into the list, building each call's event, under the lock.
        self._arrived: deque[dict[str, Any] | CallEvent] = deque()
        self._lock = threading.Lock()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events so far, oldest first (the list itself: clear it, slice it, compare it)."""
        with self._lock:
            arrived, events = self._arrived, self._events
            while arrived:
                item = arrived.popleft()
                events.append(dict(item.data()) if isinstance(item, CallEvent) else item)
            return events

    @events.setter
    def events(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._arrived.clear()
            self._events = list(events)

    def write(self, event: Mapping[str, Any]) -> None:
        self._arrived.append(dict(event))

    def _keep(self, event: CallEvent) -> None:
        self._arrived.append(event)


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
    stay whole when many threads or processes write the same file at once. The write is synchronous (the
    line is in the kernel when ``write`` returns; no ``fsync``), and a failed write (disk full, a file
    system gone read-only) raises, so the guard can count it or refuse the call (``audit_failure``).

    The path is checked here: a directory, a missing folder or a file that cannot be opened for appending
    raises :class:`~mcp_guard.ConfigurationError` at once, not at the first call.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigurationError(f"audit path {str(self.path)!r} is a directory; give a file path")
        if not self.path.parent.is_dir():
            raise ConfigurationError(
                f"audit path {str(self.path)!r}: the folder {str(self.path.parent)!r} does not exist"
            )
        self._fd: int | None = None
        self._lock = threading.Lock()
        try:
            self._open()
        except OSError as exc:
            raise ConfigurationError(f"audit path {str(self.path)!r} cannot be written: {exc.strerror or exc}") from exc

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
            raise OSError(f"audit line to {self.path} was cut short ({written} of {len(line)} bytes)")

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


def emit(sinks: Sequence[AuditSink], event: Mapping[str, Any] | CallEvent) -> list[AuditSink]:
    """Write ``event`` to every sink; returns the sinks that failed (logged, never raised into the agent run).

    A :class:`CallEvent` is built only if some sink other than a plain :class:`MemorySink` is given it.
    """
    failed: list[AuditSink] = []
    for sink in sinks:
        try:
            if type(event) is not CallEvent:
                sink.write(event)  # type: ignore[arg-type]  # a Mapping (a reload event)
            elif type(sink) is MemorySink:  # exactly: a subclass may read the event in write()
                sink._keep(event)
            else:
                sink.write(event.data())
        except Exception as exc:
            failed.append(sink)
            log.error("audit sink %r failed: %s: %s", sink, type(exc).__name__, exc)
    return failed
