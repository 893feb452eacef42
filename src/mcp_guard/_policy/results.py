"""Result rules (a rule's ``result`` block): what a tool returned, judged before the model sees it. Pure.

A block has up to three condition blocks, each on ``result.text`` (the result's text: an MCP result's text
contents joined by newlines, a ``ToolMessage``'s content, a string as is, anything else as JSON) and
``result.json.<path>`` (structured content: an MCP ``structuredContent``, a dict or list result, or a text that
is a JSON document):

- ``withhold``: a condition that holds replaces the result with a violation (code ``result_withheld``); the
  tool has run, its quota is kept.
- ``redact``: what the condition matched becomes ``[redacted]`` in every text of the result, so the model,
  the audit and session memory never see it: the spans a ``regex`` matched, each occurrence of a
  ``contains`` value, the spans a ``detect`` detector flagged; for any other operator the whole value at the
  path (for ``result.text``: every text of the result).
- ``taint``: a condition that holds makes the result count as untrusted, whatever the rule's ``results``.

As everywhere in conditions, a value of the wrong type (or a scan that could not read the whole text) is the
strict side: the condition holds. Values a ``redact`` removed and spans a detector flagged in any block are
handed back (:attr:`ResultVerdict.flagged`) for session memory to remember as keyed fingerprints, so that
``no_secrets`` can refuse them on the way out.

How a result is read and rewritten is by duck typing (:func:`result_text`, :func:`result_json`,
:func:`rewrite`): MCP ``CallToolResult`` (mcp 1 and 2), LangChain ``ToolMessage`` and ``(content, artifact)``
pairs, the proxy's JSON result dicts, strings, dicts and lists. No framework is imported.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from mcp_guard._policy.conditions import MISSING, THROUGH, ValueTest, compile_regex, is_mismatch, value_test
from mcp_guard._policy.session import EMPTY_VIEW, MIN_SECRET_CHARS

if TYPE_CHECKING:
    from mcp_guard._policy.model import ResultRules

ResultAction = Literal["redact", "withhold", "taint"]
REDACTED: Final = "[redacted]"
_ACTIONS: tuple[ResultAction, ...] = ("withhold", "redact", "taint")
# JSON results bigger than this are not parsed from text for result.json paths (the text rules still apply).
_MAX_JSON_CHARS = 5_000_000


@dataclass(frozen=True, slots=True)
class ResultRule:
    """One compiled condition of a ``result`` block."""

    action: ResultAction
    pointer: str
    path: str
    op: str
    expected: object
    test: ValueTest
    reason: str | None = None


def compile_result_rules(block: ResultRules, base_pointer: str) -> tuple[ResultRule, ...]:
    from mcp_guard._policy.matching import pointer_escape

    out: list[ResultRule] = []
    for action in _ACTIONS:
        for path, ops in getattr(block, action).items():
            for op, expected in ops.items():
                ptr = f"{base_pointer}/{action}/{pointer_escape(path)}-{op}"
                out.append(ResultRule(action, ptr, path, op, expected, value_test(op, expected), block.reason))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ResultVerdict:
    """What the result rules made of one result.

    ``value``: what the model gets when not withheld (a redacted copy, or the result itself); ``withheld``: the
    rule that withheld it; ``tainted``: a ``taint`` rule held; ``acted``: the pointers of the rules that held;
    ``redacted``: how many distinct values were blanked (everything: -1); ``flagged``: values to remember as
    secrets; ``text``: the text session memory keeps (after redaction).
    """

    value: Any
    text: str
    withheld: ResultRule | None = None
    tainted: bool = False
    acted: tuple[str, ...] = ()
    redacted: int = 0
    flagged: tuple[str, ...] = ()


def judge_result(rules: tuple[ResultRule, ...], value: Any) -> ResultVerdict:
    """Apply ``rules`` to a tool's result ``value``."""
    text = result_text(value)
    if not rules:
        return ResultVerdict(value, text)
    structured: Any = MISSING
    acted: list[str] = []
    blank: set[str] = set()
    everything = False
    flagged: list[str] = []
    withheld: ResultRule | None = None
    tainted = False
    for rule in rules:
        if rule.path == "result.text":
            target: Any = text
        else:
            if structured is MISSING:
                structured = result_json(value, text)
            target = _json_path(structured, rule.path[len("result.json.") :])
        if target is MISSING:
            continue
        if rule.op == "detect" and isinstance(target, str):
            from mcp_guard._policy.detectors import detect

            found = detect(target, typing.cast(list[str], rule.expected))
            spans: list[str] | None = found.values(target)
            holds = bool(spans) or not found.complete
        else:
            holds = target is THROUGH or _holds(rule, target)
            spans = _matched(rule, target) if target is not THROUGH and isinstance(target, str) else None
        if rule.op == "detect" and spans:
            flagged.extend(spans)
        if not holds:
            continue
        acted.append(rule.pointer)
        if rule.action == "withhold":
            withheld = withheld or rule
        elif rule.action == "taint":
            tainted = True
        elif spans is not None and rule.op in ("regex", "contains", "detect"):
            blank.update(s for s in spans if s)
        elif rule.path == "result.text" or target is THROUGH:
            everything = True
        else:
            blank.update(str(leaf) for leaf in _string_leaves(target))
    flagged.extend(blank)
    remembered = tuple(dict.fromkeys(v for v in flagged if len(v.strip()) >= MIN_SECRET_CHARS))
    if withheld is not None:
        return ResultVerdict(value, "", withheld, tainted, tuple(acted), 0, remembered)
    if everything:
        return ResultVerdict(rewrite(value, lambda _: REDACTED), REDACTED, None, tainted, tuple(acted), -1, remembered)
    if blank:
        ordered = sorted(blank, key=len, reverse=True)  # a longer value first, so no part of it survives

        def scrub(s: str) -> str:
            for secret in ordered:
                s = s.replace(secret, REDACTED)
            return s

        return ResultVerdict(rewrite(value, scrub), scrub(text), None, tainted, tuple(acted), len(blank), remembered)
    return ResultVerdict(value, text, None, tainted, tuple(acted), 0, remembered)


def _holds(rule: ResultRule, target: Any) -> bool:
    result = rule.test(target, EMPTY_VIEW)
    return is_mismatch(result) or bool(result)


def _matched(rule: ResultRule, target: str) -> list[str] | None:
    """The parts of ``target`` the rule's operator matched (regex, contains, detect), else None."""
    if rule.op == "regex":
        return _regex_spans(str(rule.expected), target)
    if rule.op == "contains" and isinstance(rule.expected, str) and rule.expected in target:
        return [rule.expected]
    return None


def _regex_spans(pattern: str, text: str) -> list[str]:
    from mcp_guard._policy.conditions import _re2

    if not compile_regex(pattern)(text):
        return []
    re2, options = _re2()
    return [m.group() for m in re2.compile(pattern, options).finditer(text) if m.group()]


def _string_leaves(value: Any) -> list[str]:
    stack, out = [value], []
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(json.dumps(item))
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return out


def _json_path(doc: Any, path: str) -> Any:
    cur = doc
    for seg in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(seg, MISSING)
        elif isinstance(cur, (list, tuple)) and seg.isdigit():
            cur = cur[int(seg)] if int(seg) < len(cur) else MISSING
        elif cur is None or cur is MISSING:
            return MISSING
        else:
            return THROUGH
        if cur is MISSING:
            return MISSING
    return MISSING if cur is None else cur


# -- reading and rewriting results, by duck typing ---------------------------------------------------------


def _field(value: Any, *names: str) -> Any:
    for name in names:
        if isinstance(value, Mapping):
            if name in value:
                return value[name]
        else:
            found = getattr(value, name, None)
            if found is not None:
                return found
    return None


def _blocks_text(blocks: Any) -> str | None:
    """The text of a list of content blocks (MCP ``TextContent`` objects or dicts, LangChain text blocks)."""
    if not isinstance(blocks, (list, tuple)):
        return None
    texts = []
    for block in blocks:
        if isinstance(block, str):
            texts.append(block)
            continue
        text = _field(block, "text")
        if isinstance(text, str):
            texts.append(text)
    return "\n".join(texts)


def _is_message(value: Any) -> bool:
    return hasattr(value, "tool_call_id") and hasattr(value, "content")


def result_text(value: Any) -> str:
    """The text of a tool result: what ``result.text`` conditions read and session memory keeps."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (int, float)):
        return result_text(value[0])  # LangChain's (content, artifact)
    if _is_message(value):
        content = value.content
        return content if isinstance(content, str) else (_blocks_text(content) or "")
    content = _field(value, "content")
    if isinstance(content, (list, tuple)) and not isinstance(value, (list, tuple)):
        found = _blocks_text(content)
        if found is not None:
            return found
    if value is None:
        return ""
    try:
        return json.dumps(_plain(value), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def result_json(value: Any, text: str | None = None) -> Any:
    """The structured form of a tool result (for ``result.json.<path>``), or None."""
    structured = _field(value, "structuredContent", "structured_content")
    if structured is not None:
        return structured
    if isinstance(value, (Mapping, list)) and _field(value, "content") is None:
        return value
    text = result_text(value) if text is None else text
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= _MAX_JSON_CHARS:
        try:
            return json.loads(stripped)
        except ValueError:
            return None
    return None


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def rewrite(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of ``value`` with ``fn`` applied to each of its texts (and the strings of its structured content)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (int, float)):
        return (rewrite(value[0], fn), value[1])
    if _is_message(value):
        return value.model_copy(update={"content": _rewrite_json(value.content, fn)})
    content = _field(value, "content")
    if isinstance(content, (list, tuple)) and not isinstance(value, (list, tuple)):
        blocks = [_rewrite_block(b, fn) for b in content]
        if isinstance(value, Mapping):
            out = dict(value)
            out["content"] = blocks
            for key in ("structuredContent", "structured_content"):
                if key in out:
                    out[key] = _rewrite_json(out[key], fn)
            return out
        update: dict[str, Any] = {"content": blocks}
        for key in ("structuredContent", "structured_content"):
            if getattr(value, key, None) is not None:
                update[key] = _rewrite_json(getattr(value, key), fn)
        copy = getattr(value, "model_copy", None)
        if callable(copy):
            return copy(update=update)
    if isinstance(value, (Mapping, list, tuple)) or value is None or isinstance(value, (int, float, bool)):
        return _rewrite_json(value, fn)
    return fn(str(value))  # an object we cannot rebuild: its text, rewritten


def _rewrite_block(block: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(block, str):
        return fn(block)
    text = _field(block, "text")
    if not isinstance(text, str):
        return block
    if isinstance(block, Mapping):
        return {**block, "text": fn(text)}
    copy = getattr(block, "model_copy", None)
    return copy(update={"text": fn(text)}) if callable(copy) else block


def _rewrite_json(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _rewrite_json(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rewrite_json(v, fn) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = json.dumps(value)
        changed = fn(text)
        return value if changed == text else changed
    return value


__all__ = ["REDACTED", "ResultRule", "ResultVerdict", "compile_result_rules", "judge_result", "result_text"]
