"""One strict reading of each stdio JSON-RPC message the relay passes: what it judged is what it forwards.

The relay (:mod:`mcp_guard._proxy.relay`) used to judge its own parse of a line and forward the bytes it
received. Another parser can read those bytes as something else: the Python MCP SDK reads stdin through a
``TextIOWrapper`` with universal newlines, so a bare CR, which JSON allows as whitespace, ends a message
there, and one line that is one object to the relay is several messages upstream; bytes that are not UTF-8
become U+FFFD there and in the TypeScript SDK, while Python's ``json.loads(bytes)`` takes a BOM, UTF-16 and
UTF-8-encoded surrogates. So every message is parsed here once, strictly, and what goes on is
:func:`dump` of that parse (compact, ASCII only: no raw byte any reader could split on or decode its own
way), or the message is refused. Refused:

- bytes that are not UTF-8 (a BOM, an encoded surrogate, a stray byte), and anything that is not exactly
  one JSON value: a parse error (-32700);
- a bare CR anywhere but just before the final LF (CRLF endings are taken), duplicate object keys (readers
  differ on which one counts), ``NaN``/``Infinity`` or a number too large for a double, an escaped lone
  surrogate (the Python SDK's parser refuses it, JavaScript keeps it), and in what a client sends (what the
  guard judges) an integer beyond 2**53 (JavaScript reads another number): an invalid request (-32600),
  under the message's id when one can be read;
- a JSON value that is not an object: an invalid request (a batch is refused whole).

Line separators inside strings (U+2028, U+2029, U+0085) are valid JSON and pass, escaped by :func:`dump`.
The size bound is the reader's (``asyncio.StreamReader(limit=...)``); see :func:`read_messages`.

Cost: one C-level UTF-8 decode, the stdlib C scanner with a pairs hook (duplicate keys) and, for client
messages, an integer hook (both called per object or integer, not per byte), and one C-level encode. The
surrogate check looks at the bytes first and encodes again only when they hold a ``\\uD8..`` escape.
"""

from __future__ import annotations

import asyncio
import json
import json.encoder
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, NoReturn

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
#: An integer JavaScript's numbers (IEEE doubles) hold exactly; any larger one is read as another number.
SAFE_INTEGER = 2**53 - 1


class Refusal(NamedTuple):
    """A message not passed on: the JSON-RPC error code, why (for the error message and the log), and the
    message's id and whether it was a request (``method``), when they could be read."""

    code: int
    reason: str
    id: Any = None
    request: bool = False


class Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class _Strictness(ValueError):
    """Valid JSON that some reader would read another way."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Strictness(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> NoReturn:
    raise _Strictness(f"{name} is not a JSON number")


def _exact_int(text: str) -> int:
    value = int(text)
    if len(text) > 15 and not -SAFE_INTEGER <= value <= SAFE_INTEGER:  # 2**53 has 16 digits
        raise _Strictness("an integer beyond 2**53 (JavaScript reads it as another number)")  # not its value
    return value


_STRICT = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant)
_EXACT = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant, parse_int=_exact_int)
_LENIENT = json.JSONDecoder()
# ASCII only: every non-ASCII character, U+2028/U+2029/U+0085 included, goes out as a \u escape.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False, check_circular=False)
_UNICODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False).encode


def _c_encoder() -> Any:
    """JSONEncoder.encode builds the C encoder anew for every message; built once it costs a third less. Its
    arguments are those JSONEncoder.iterencode passes (no markers: nothing the relay dumps holds a cycle); it
    is used only if it writes exactly what JSONEncoder does (the C signature is not a documented API)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encode = make(None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
        sample = {"a": [1, 2.5, None, True, "\u00e9\u2028"], "b": {}}
        return encode if "".join(encode(sample, 0)) == _ENCODER.encode(sample) else None
    except Exception:  # another interpreter's signature: the plain encoder
        return None


_C_ENCODE = _c_encoder()


def dump(message: Any) -> bytes:
    """``message`` as one line: compact JSON, ASCII only, LF-terminated. Raises ValueError for NaN/Infinity."""
    text = "".join(_C_ENCODE(message, 0)) if _C_ENCODE is not None else _ENCODER.encode(message)
    return text.encode() + b"\n"


def parse(raw: bytes, *, exact: bool = True) -> tuple[bytes, dict[str, Any]]:
    """One newline-delimited message: its re-serialisation (:func:`dump`) and its parse, or :class:`Refused`.

    ``exact``: refuse integers beyond 2**53. On for what clients send (the guard judges it, and an upstream on
    the TypeScript SDK would run with another number); off for upstream answers, which the guard does not
    judge (a 64-bit id in a tool's result is no reason to lose the result).
    """
    body = raw[:-1] if raw.endswith(b"\n") else raw
    if body.endswith(b"\r"):
        body = body[:-1]  # a CRLF line ending: every reader takes it as the end of this message
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(Refusal(PARSE_ERROR, "a message that is not UTF-8")) from None
    problem: str | None = None
    try:
        message = (_EXACT if exact else _STRICT).decode(text)
    except _Strictness as exc:
        message, problem = None, str(exc)
    except (ValueError, RecursionError):  # not JSON, or one value then more; RecursionError: nested too deep
        raise Refused(Refusal(PARSE_ERROR, "a message that is not one JSON value")) from None
    if problem is None and b"\r" in body:
        problem = "a carriage return inside a message (a reader with universal newlines ends the message there)"
    if problem is None and (b"\\ud" in body or b"\\uD" in body):
        try:
            _UNICODE(message).encode()
        except UnicodeEncodeError:
            problem = "a lone surrogate in a string"
        except ValueError:
            pass  # a non-finite number: found below
    if problem is None and isinstance(message, dict):
        try:
            return dump(message), message
        except ValueError:
            problem = "a number too large for a double"
    if problem is not None:
        rid, request = _identify(message if message is not None else text)
        raise Refused(Refusal(INVALID_REQUEST, problem, rid, request))
    if isinstance(message, list):
        raise Refused(Refusal(INVALID_REQUEST, "a JSON-RPC batch"))
    raise Refused(Refusal(INVALID_REQUEST, "a JSON value that is not an object"))


def inexact_integer(value: Any) -> str | None:
    """Where ``value`` (parsed JSON) holds an integer beyond 2**53, which JavaScript would read as another
    number, as ``args.a.b``; None when it holds none. For paths that parse with a parser of their own (the SDK
    path), so a TypeScript upstream never runs with a number the guard did not see. Iterative: any depth."""
    stack: list[tuple[str, Any]] = [("args", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not -SAFE_INTEGER <= item <= SAFE_INTEGER:
                return f"{path} is an integer beyond 2**53 (JavaScript reads it as another number)"
        elif isinstance(item, dict):
            stack.extend((f"{path}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


def _identify(message: Any) -> tuple[Any, bool]:
    """The id of a refused message, so the error can go to whoever waits on it, and whether it is a request."""
    if isinstance(message, str):
        try:
            message = _LENIENT.decode(message)
        except (ValueError, RecursionError):
            return None, False
    if not isinstance(message, dict):
        return None, False
    rid = message.get("id")
    if not (isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))):
        return None, False
    if isinstance(rid, int) and not -SAFE_INTEGER <= rid <= SAFE_INTEGER:
        return None, False
    return rid, "method" in message


async def read_messages(
    reader: asyncio.StreamReader, refused: Callable[[Refusal], None], *, exact: bool = True
) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
    """Each LF-terminated message on ``reader`` as :func:`parse` gives it, until EOF; refusals go to ``refused``.

    A message is acted on only once its LF has arrived, however many writes it came in. Blank lines are
    skipped. A message longer than the reader's limit is refused whole and skipped to its LF (its tail is
    never read as a message of its own); so is a last message cut off by EOF before its LF.
    """
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                refused(Refusal(PARSE_ERROR, "a message cut off by the end of the stream"))
            return
        except asyncio.LimitOverrunError as exc:
            if not await _skip_line(reader, exc.consumed):
                return
            refused(Refusal(INVALID_REQUEST, "a message longer than the proxy's limit"))
            continue
        if not raw.strip():
            continue
        try:
            yield parse(raw, exact=exact)
        except Refused as exc:
            refused(exc.refusal)


async def _skip_line(reader: asyncio.StreamReader, scanned: int) -> bool:
    """Drop the over-long line at the head of ``reader``, up to and including its LF; False at EOF."""
    while True:
        await reader.readexactly(scanned)  # what readuntil scanned holds no LF, or ends just before it
        try:
            await reader.readuntil(b"\n")
            return True
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError as exc:
            scanned = exc.consumed


__all__ = [
    "INVALID_REQUEST",
    "PARSE_ERROR",
    "SAFE_INTEGER",
    "Refusal",
    "Refused",
    "dump",
    "inexact_integer",
    "parse",
    "read_messages",
]
