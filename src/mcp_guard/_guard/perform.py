"""The store and the approver as the pipeline's drivers call them: one store op or one question, its answer checked.

A store's answer the guard cannot act on (not a Verdict, a token that is not text, session memory of the wrong
shape) becomes a :class:`~mcp_guard.StoreError` (fail closed); an approver's failure, silence or nonsense
becomes an :class:`~mcp_guard._calls.ops.Answer` with the code of why there is none.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from mcp_guard._audit.events import scrub
from mcp_guard._calls.approval import Asked, NoAnswer, Workers, coerce_decision
from mcp_guard._calls.ops import (
    Answer,
    Ask,
    Check,
    FindGrant,
    Recall,
    Release,
    Remember,
    Reserve,
    SaveGrant,
    SessionKey,
    StoreOp,
)
from mcp_guard._errors import ApprovalError, StoreError
from mcp_guard._stores import Store, StoreProtocol, Verdict

log = logging.getLogger("mcp_guard")

STORE_WORKERS = Workers("mcp-guard-store")


def store_op(store: Store | StoreProtocol, op: StoreOp) -> Any:
    if isinstance(op, Recall):
        return _session_store(store).session_read(op.session, op.parts)
    if isinstance(op, Remember):
        return _session_store(store).session_append(op.session, op.records, op.caps, op.ttl_s)
    if isinstance(op, SessionKey):
        return _session_store(store).session_key()
    if isinstance(op, Check):
        return store.check(op.charges)
    if isinstance(op, Reserve):
        return store.reserve(op.charges)
    if isinstance(op, FindGrant):
        return cast(Store, store).find_grant(op.owner, op.digests)
    if isinstance(op, SaveGrant):
        return cast(Store, store).save_grant(op.owner, op.digest, op.grant_id, op.ttl_s)
    return store.release(op.charges, op.token)


def _session_store(store: Any) -> Any:
    if not callable(getattr(store, "session_read", None)):
        raise StoreError(f"the store {type(store).__name__} keeps no session memory (a policy here needs it)")
    return store


async def astore_op(store: Store | StoreProtocol, op: StoreOp) -> Any:
    if isinstance(op, Recall):
        return await _session_store(store).asession_read(op.session, op.parts)
    if isinstance(op, Remember):
        return await _session_store(store).asession_append(op.session, op.records, op.caps, op.ttl_s)
    if isinstance(op, SessionKey):
        return await _session_store(store).asession_key()
    if isinstance(op, Check):
        return await store.acheck(op.charges)
    if isinstance(op, Reserve):
        return await store.areserve(op.charges)
    if isinstance(op, FindGrant):
        return await cast(Store, store).afind_grant(op.owner, op.digests)
    if isinstance(op, SaveGrant):
        return await cast(Store, store).asave_grant(op.owner, op.digest, op.grant_id, op.ttl_s)
    return await store.arelease(op.charges, op.token)


def verdict_of(op: StoreOp, value: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise as_store_error(error) from error
    return checked_verdict(op, value)


def checked_verdict(op: StoreOp, value: Any) -> Any:
    """A store's answer, or StoreError when it is not a Verdict the guard can act on (fail closed)."""
    if isinstance(op, (Release, SaveGrant)):
        return None
    if isinstance(op, FindGrant):
        if value is not None and not isinstance(value, str):
            raise StoreError(f"the store returned a grant id of type {type(value).__name__}")
        return value
    if isinstance(op, (Recall, Remember, SessionKey)):
        return _checked_memory(op, value)
    if not isinstance(value, Verdict) or type(value.ok) is not bool:
        raise StoreError(f"the store returned {type(value).__name__}, not a Verdict")
    if isinstance(op, Reserve) and value.ok and value.token is not None and not isinstance(value.token, str):
        raise StoreError(f"the store returned a reservation token of type {type(value.token).__name__}")
    return value


def _checked_memory(op: Recall | Remember | SessionKey, value: Any) -> Any:
    """A store's answer to a session-memory op, or StoreError when it has the wrong shape (fail closed)."""
    if isinstance(op, SessionKey):
        if not isinstance(value, bytes) or not value:
            raise StoreError("the store returned no session key")
        return value
    if not isinstance(value, dict):
        raise StoreError(f"the store returned {type(value).__name__} for session memory, not a dict")
    return value


def as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def answer_of(op: Ask, outcome: Asked) -> Answer:
    """What the approver's outcome means for the call: an answer, or the code of why there is none."""
    raw, error = outcome
    if isinstance(error, NoAnswer):
        return Answer(code="approval_timeout", reason=f"no approval within {op.timeout_s:g} s")
    if error is not None:
        # The model is told a human did not approve; the details go to the log, with any redacted argument
        # the approver's message quotes blanked.
        detail = scrub(str(error), op.request.args, op.redact)
        log.error("approver failed for %s: %s: %s", op.request.tool, type(error).__name__, detail)
        return Answer(code="approval_denied", reason="the approval could not be obtained")
    try:
        return Answer(decision=coerce_decision(raw))
    except ApprovalError:
        log.error("approver for %s returned an invalid answer (%s)", op.request.tool, type(raw).__name__)
        return Answer(code="approval_denied", reason="the approver gave no valid answer")


__all__ = ["STORE_WORKERS", "answer_of", "as_store_error", "astore_op", "checked_verdict", "store_op", "verdict_of"]
