"""The relay's one strict reading of a message (``_proxy_json``), in process: what it refuses, what it passes,
and that what it passes re-serialised reads back as the same value under the strictest reading.

The end-to-end judge (what real SDK readers ran) is ``tests/proxy/test_smuggling.py``; this module pins the reader's
edges cheaply: a message over the limit is skipped to its LF and its tail never read as a message, a message
cut off by EOF is refused, a message split across feeds is read once, whole.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mcp_guard._proxy.strict_json import (
    INVALID_REQUEST,
    PARSE_ERROR,
    SAFE_INTEGER,
    Refusal,
    Refused,
    dump,
    inexact_integer,
    parse,
    read_messages,
)

CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'


def refusal(raw: bytes, *, exact: bool = True) -> Refusal:
    with pytest.raises(Refused) as caught:
        parse(raw, exact=exact)
    return caught.value.refusal


@pytest.mark.parametrize(
    ("raw", "code", "rid"),
    [
        (CALL.replace(b',"id"', b',\r"id"') + b"\n", INVALID_REQUEST, 7),  # bare CR as whitespace
        (CALL.replace(b'"hi"}', b'"hi","text":"ho"}') + b"\n", INVALID_REQUEST, 7),  # duplicate key
        (CALL.replace(b'"hi"', b"NaN") + b"\n", INVALID_REQUEST, 7),
        (CALL.replace(b'"hi"', b"-Infinity") + b"\n", INVALID_REQUEST, 7),
        (CALL.replace(b'"hi"', b"1e400") + b"\n", INVALID_REQUEST, 7),  # a double's infinity
        (CALL.replace(b'"hi"', b'"\\ud800"') + b"\n", INVALID_REQUEST, 7),  # lone surrogate
        (CALL.replace(b'"hi"', b"9007199254740993") + b"\n", INVALID_REQUEST, 7),
        (b"\xef\xbb\xbf" + CALL + b"\n", PARSE_ERROR, None),  # BOM
        (CALL.replace(b"hi", b"h\x00i") + b"\n", PARSE_ERROR, None),  # raw NUL
        (CALL.replace(b"hi", b"h\xffi") + b"\n", PARSE_ERROR, None),  # not UTF-8
        (CALL.replace(b"hi", b"h\xed\xa0\x80i") + b"\n", PARSE_ERROR, None),  # an encoded surrogate
        (CALL.decode().encode("utf-16-le") + b"\n", PARSE_ERROR, None),  # json.loads(bytes) would take it
        (CALL + CALL + b"\n", PARSE_ERROR, None),  # two messages, one line
        (b"[" * 100_000 + b"\n", PARSE_ERROR, None),  # nested past the recursion limit: refused, no crash
        (b"[" + CALL + b"]\n", INVALID_REQUEST, None),  # a batch
        (b'"tools/call"\n', INVALID_REQUEST, None),
    ],
)
def test_refused(raw: bytes, code: int, rid: Any) -> None:
    refused = refusal(raw)
    assert (refused.code, refused.id) == (code, rid)
    assert refused.request is (rid is not None)


def test_answers_are_told_apart_from_requests() -> None:
    answer = b'{"jsonrpc":"2.0","id":"s1","result":{},"result":{}}\n'
    assert refusal(answer) == Refusal(INVALID_REQUEST, "duplicate key 'result'", "s1", False)


def test_integers_beyond_2_53_pass_in_upstream_answers_only() -> None:
    answer = b'{"jsonrpc":"2.0","id":1,"result":{"big":18446744073709551617}}\n'
    assert parse(answer, exact=False)[1]["result"]["big"] == 2**64 + 1
    assert refusal(answer).code == INVALID_REQUEST
    assert parse(b'{"n":9007199254740991,"m":-9007199254740991}\n')[1] == {"n": SAFE_INTEGER, "m": -SAFE_INTEGER}


def test_what_passes_is_re_serialised_ascii_one_line() -> None:
    raw = '{"jsonrpc": "2.0", "id": 1, "params": {"t": "a\u2028b\u2029c\x85d\\re\U0001f600"}}\r\n'.encode()
    line, message = parse(raw)
    assert line.isascii()
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert json.loads(line) == message == json.loads(raw)
    assert message["params"]["t"] == "a\u2028b\u2029c\x85d\re\U0001f600"
    assert line == dump(message)


def test_inexact_integer_names_the_path_at_any_depth() -> None:
    deep: Any = 2**60
    for _ in range(5000):
        deep = [deep]
    assert inexact_integer({"a": {"b": [1, 2**53]}}) == (
        "args.a.b[1] is an integer beyond 2**53 (JavaScript reads it as another number)"
    )
    assert inexact_integer({"deep": deep}) is not None
    assert inexact_integer({"ok": [SAFE_INTEGER, -SAFE_INTEGER, 1.5e300, True]}) is None


async def read_all(chunks: list[bytes], limit: int = 1 << 16) -> tuple[list[dict[str, Any]], list[Refusal]]:
    reader = asyncio.StreamReader(limit=limit)
    refused: list[Refusal] = []
    got: list[dict[str, Any]] = []

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)  # the reader runs between feeds: each chunk is a separate read
        reader.feed_eof()

    feeding = asyncio.ensure_future(feed())
    async for _, message in read_messages(reader, refused.append):
        got.append(message)
    await feeding
    return got, refused


async def test_a_message_split_across_writes_is_read_once_whole() -> None:
    got, refused = await read_all([CALL[:10], CALL[10:40], CALL[40:] + b"\n"])
    assert got == [json.loads(CALL)]
    assert refused == []


async def test_a_message_over_the_limit_is_skipped_to_its_lf_tail_and_all() -> None:
    hidden = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"admin_reset"}}'
    oversize = b" " * 5000 + hidden + b"\n"
    got, refused = await read_all([oversize[:3000], oversize[3000:], CALL + b"\n"], limit=1024)
    assert got == [json.loads(CALL)]  # the hidden tail was never read as a message
    assert [(r.code, r.id) for r in refused] == [(INVALID_REQUEST, None)]


async def test_a_message_cut_off_by_eof_is_refused_and_blank_lines_skipped() -> None:
    got, refused = await read_all([b"\n  \r\n" + CALL + b"\n", CALL])
    assert got == [json.loads(CALL)]
    assert [(r.code, r.reason) for r in refused] == [(PARSE_ERROR, "a message cut off by the end of the stream")]
