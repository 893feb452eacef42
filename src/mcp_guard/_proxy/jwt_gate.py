"""The proxy's JWT front: ``mcp-guard proxy ... --listen HOST:PORT --jwt-keys FILE --jwt-audience AUD``.

Every HTTP request to ``/mcp`` must carry ``Authorization: Bearer <JWT>`` that :class:`JwtVerifier` accepts;
anything else gets 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a short reason, before
any MCP message is read, so nothing of it reaches the upstream. The verified caller is kept in the
request's ASGI scope, where the tool-call handler finds it: its identity (``sub`` or ``--identity-claim``)
is the call's identity, and its claims are the policy's ``claims.*``.

This module only parses options and wraps the ``/mcp`` endpoint; verification is :mod:`mcp_guard._proxy.jwt`.
Nothing here is imported unless a JWT option is given.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from mcp_guard._errors import MissingExtraError
from mcp_guard._proxy.jwt import DEFAULT_LEEWAY_S, InvalidToken, JwtConfigError, JwtVerifier, VerifiedCaller

#: Where a verified caller is kept in the ASGI scope of its request (the SDK's request context holds the scope).
SCOPE_KEY = "mcp_guard.caller"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def add_jwt_options(parser: argparse.ArgumentParser) -> None:
    """The ``--jwt-*`` options of ``mcp-guard proxy``."""
    group = parser.add_argument_group("identity from bearer JWTs (HTTP, with --listen)")
    group.add_argument(
        "--jwt-keys",
        metavar="FILE",
        help="verify bearer JWTs with these public keys: a JWKS (JSON) or a PEM public key or certificate; "
        "algorithms follow the key type",
    )
    group.add_argument(
        "--jwt-secret",
        metavar="FILE",
        help="verify HS256/384/512 JWTs with the shared secret in this file (only if the issuer signs that way)",
    )
    group.add_argument("--jwt-audience", metavar="AUD", help="the audience (aud) tokens must be issued for (required)")
    group.add_argument("--jwt-issuer", metavar="ISS", help="the issuer (iss) tokens must come from")
    group.add_argument(
        "--jwt-leeway",
        type=float,
        metavar="S",
        help=f"seconds of clock skew allowed for exp / nbf / iat (default {DEFAULT_LEEWAY_S:g})",
    )
    group.add_argument("--identity-claim", metavar="NAME", help="the claim that names the caller (default sub)")


def jwt_configured(args: argparse.Namespace) -> bool:
    """Whether the JWT front is asked for; exits with a one-line error when its options do not fit together."""
    keys, secret = getattr(args, "jwt_keys", None), getattr(args, "jwt_secret", None)
    extras = [
        name
        for name, value in (
            ("--jwt-audience", args.jwt_audience),
            ("--jwt-issuer", args.jwt_issuer),
            ("--jwt-leeway", args.jwt_leeway),
            ("--identity-claim", args.identity_claim),
        )
        if value is not None
    ]
    if not keys and not secret:
        if extras:
            raise SystemExit(f"mcp-guard proxy: {extras[0]} goes with --jwt-keys (or --jwt-secret)")
        return False
    if keys and secret:
        raise SystemExit("mcp-guard proxy: give one of --jwt-keys and --jwt-secret")
    if not args.listen:
        raise SystemExit("mcp-guard proxy: JWT identity needs --listen (HTTP)")
    if args.identity is not None or args.identity_header is not None:
        raise SystemExit(
            "mcp-guard proxy: --jwt-keys takes the identity from the token: drop --identity and --identity-header"
        )
    if args.identity_from not in (None, "bearer"):
        raise SystemExit("mcp-guard proxy: --jwt-keys reads the bearer token (--identity-from bearer)")
    args.identity_from = "bearer"  # a JWT is a bearer token: --jwt-keys alone means --identity-from bearer
    if not args.jwt_audience:
        raise SystemExit(
            "mcp-guard proxy: --jwt-keys needs --jwt-audience (the proxy accepts only tokens minted for it)"
        )
    return True


def verifier_from_args(args: argparse.Namespace) -> JwtVerifier:
    """The verifier the options describe; exits with a one-line error when a key file cannot be used."""
    options: dict[str, Any] = {
        "audience": args.jwt_audience,
        "issuer": args.jwt_issuer,
        "leeway_s": DEFAULT_LEEWAY_S if args.jwt_leeway is None else args.jwt_leeway,
        "identity_claim": args.identity_claim or "sub",
    }
    try:
        if args.jwt_secret:
            try:
                secret = Path(args.jwt_secret).read_bytes()
            except OSError as exc:
                raise JwtConfigError(f"cannot read --jwt-secret {args.jwt_secret}: {exc.strerror or exc}") from None
            return JwtVerifier.from_secret(secret, **options)
        return JwtVerifier.from_file(args.jwt_keys, **options)
    except (JwtConfigError, MissingExtraError) as exc:
        raise SystemExit(f"mcp-guard proxy: {exc}") from None


class JwtGate:
    """Wraps the ``/mcp`` ASGI endpoint: a request passes only with a valid bearer JWT, its caller in the scope."""

    def __init__(self, verifier: JwtVerifier) -> None:
        self.verifier = verifier

    def __call__(self, app: ASGIApp) -> ASGIApp:
        return _Gated(app, self.verifier)


class _Gated:
    # A class, not a function: Starlette serves a function endpoint as a GET-only request handler, and an
    # ASGI application (every method, as the SDK expects) only when it is an object.
    def __init__(self, app: ASGIApp, verifier: JwtVerifier) -> None:
        self.app, self.verifier = app, verifier

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope.get("type") == "http":
            try:
                scope[SCOPE_KEY] = self.verifier.verify(_bearer(scope))
            except InvalidToken as exc:
                await _unauthorized(send, exc.reason)
                return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
    if len(values) != 1:
        raise InvalidToken("no bearer token" if not values else "more than one Authorization header")
    scheme, _, token = bytes(values[0]).decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("no bearer token")
    return token


async def _unauthorized(send: Callable[[Any], Awaitable[None]], reason: str) -> None:
    # RFC 6750 section 3: the error and a human-readable description in the challenge; the reason holds no quote.
    challenge = f'Bearer error="invalid_token", error_description="{reason}"'
    body = json.dumps({"error": "invalid_token", "error_description": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode("latin-1", "replace")),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _caller(ctx: Any) -> VerifiedCaller | None:
    scope = getattr(getattr(ctx, "request", None), "scope", None)
    found = scope.get(SCOPE_KEY) if isinstance(scope, Mapping) else None
    return found if isinstance(found, VerifiedCaller) else None


def caller_identity(ctx: Any) -> str | None:
    """The identity the request's token vouched for (the proxy's per-call identity)."""
    caller = _caller(ctx)
    return caller.identity if caller is not None else None


def caller_claims(ctx: Any) -> Mapping[str, Any] | None:
    """The request's verified claims (the policy's ``claims.*``)."""
    caller = _caller(ctx)
    return caller.claims if caller is not None else None


__all__ = [
    "SCOPE_KEY",
    "JwtGate",
    "add_jwt_options",
    "caller_claims",
    "caller_identity",
    "jwt_configured",
    "verifier_from_args",
]
