"""Bearer JWTs: who is calling, as a token issuer vouches (MCP's authorization is OAuth with bearer JWTs).

:class:`JwtVerifier` checks a token with PyJWT (and its ``cryptography`` backend), never with code of our own:
the signature against the configured keys, ``exp`` (required) and ``nbf`` / ``iat`` with a small leeway, the
audience (required: a token minted for another service is not for this one) and, when configured, the issuer.
The identity is the ``sub`` claim, or another named one; the claims are handed to the policy (``claims.*``).

Algorithms are pinned to the keys, never taken from the token: an RSA key verifies RS256/384/512 and
PS256/384/512, an EC key the ES algorithm of its curve, an Ed25519/Ed448 key EdDSA, and a JWK that names its
``alg`` only that one. HMAC needs a secret given explicitly as such (``--jwt-secret``); a public key is never
read as an HMAC secret (the HS256-signed-with-the-RSA-public-key confusion), a shared secret never sits in a
JWKS, and ``alg: none`` is refused before anything else. Keys are read once, when the verifier is built.

Not here: fetching a JWKS over the network (give the file; rotate by restarting), token introspection, and
revocation lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_guard._errors import ConfigurationError, MCPGuardError, require_extra

_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_MIN_RSA_BITS = 2048
_MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key of at least the hash's size
DEFAULT_LEEWAY_S = 30.0
MAX_LEEWAY_S = 300.0


class InvalidToken(MCPGuardError):
    """A bearer token that does not identify the caller; ``reason`` is short and quotes nothing of the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwtConfigError(ConfigurationError):
    """The keys or options given for JWT verification cannot be used."""


@dataclass(frozen=True, slots=True)
class VerifiedCaller:
    """A caller a valid token vouched for: the identity and every claim of the token."""

    identity: str
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # a cryptography public key, or the HMAC secret's bytes
    algorithms: tuple[str, ...]  # what this key may verify: fixed by its type, never by a token
    kid: str | None = None


class JwtVerifier:
    """Checks bearer JWTs against fixed keys; :meth:`verify` gives the caller or raises :class:`InvalidToken`.

    Build with :meth:`from_file` (a JWKS, a single JWK, or a PEM public key or certificate) or
    :meth:`from_secret` (an HMAC secret, only when that is what the issuer uses).
    """

    def __init__(
        self,
        keys: Sequence[_Key],
        *,
        audience: str | Sequence[str],
        issuer: str | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
        identity_claim: str = "sub",
    ) -> None:
        require_extra("jwt", "proxy", "JWT verification")
        if not keys:
            raise JwtConfigError("no key to verify tokens with")
        if not audience:
            raise JwtConfigError("an audience is required: the proxy must only accept tokens minted for it")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise JwtConfigError(f"the leeway must be between 0 and {MAX_LEEWAY_S:g} seconds")
        if not identity_claim:
            raise JwtConfigError("the identity claim needs a name")
        self._keys = tuple(keys)
        self.audience = audience if isinstance(audience, str) else list(audience)
        self.issuer = issuer
        self.leeway_s = float(leeway_s)
        self.identity_claim = identity_claim
        required = ["exp", "aud", identity_claim] + (["iss"] if issuer is not None else [])
        self._options: dict[str, Any] = {"require": required, "verify_signature": True, "strict_aud": False}

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Every algorithm some configured key accepts."""
        return tuple(dict.fromkeys(a for k in self._keys for a in k.algorithms))

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> JwtVerifier:
        """Keys from a JWKS (``{"keys": [...]}``), one JWK, or a PEM public key / certificate file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise JwtConfigError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
        return cls(load_keys(data, str(path)), **options)

    @classmethod
    def from_secret(cls, secret: bytes, **options: Any) -> JwtVerifier:
        """An HMAC (HS256/384/512) verifier: only for an issuer that signs with a secret shared with this proxy."""
        return cls([hmac_key(secret)], **options)

    def verify(self, token: str) -> VerifiedCaller:
        """The caller ``token`` vouches for, or :class:`InvalidToken` saying briefly why not."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidToken("unsigned tokens (alg none) are not accepted")
        kid = header.get("kid")
        candidates = self._candidates(alg, kid if isinstance(kid, str) else None)
        if not candidates:
            raise InvalidToken(
                f"no configured key verifies {_short(alg)} tokens" + (" with this key id" if kid else "")
            )
        failure = "the token's signature does not verify"
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=list(key.algorithms),  # the key's own, so the token cannot pick another family
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options=self._options,  # type: ignore[arg-type]  # a plain dict of Options' keys
                )
            except jwt.InvalidSignatureError:
                continue  # another key with the same id or none may still verify it
            except jwt.PyJWTError as exc:
                raise InvalidToken(_reason(exc)) from None
            return VerifiedCaller(self._identity(claims), claims)
        raise InvalidToken(failure)

    def _candidates(self, alg: str, kid: str | None) -> list[_Key]:
        keys = [k for k in self._keys if alg in k.algorithms]
        if kid is not None and any(k.kid == kid for k in keys):
            return [k for k in keys if k.kid == kid]
        if kid is not None:
            return [k for k in keys if k.kid is None]  # a PEM key has no id: it may still be the one
        return keys

    def _identity(self, claims: Mapping[str, Any]) -> str:
        value = claims.get(self.identity_claim)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise InvalidToken(f"the token's {self.identity_claim} claim is not a usable identity")
        return str(value)


def _reason(exc: Exception) -> str:
    import jwt

    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token was not issued for this audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token is from another issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {_short(exc.claim)} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token's algorithm is not allowed for this key"
    return "the token is malformed"


def _short(text: str) -> str:
    # Reasons go into a quoted header value: what a client chose (an alg name) is cut and kept to safe letters.
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "?" for c in text[:20])


# -- keys --------------------------------------------------------------------------------------------------


def load_keys(data: bytes, source: str = "keys") -> list[_Key]:
    """The verification keys in a JWKS, a JWK or a PEM file, each pinned to its algorithms."""
    require_extra("cryptography", "proxy", "JWT verification")
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        return [_pem_key(text, source)]
    try:
        doc = json.loads(text)
    except ValueError:
        raise JwtConfigError(f"{source}: neither a JWKS (JSON) nor a PEM public key") from None
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        jwks = doc["keys"]
    elif isinstance(doc, dict) and "kty" in doc:
        jwks = [doc]
    else:
        raise JwtConfigError(f'{source}: a JWKS must be an object with a "keys" list')
    keys = [_jwk_key(jwk, f"{source} key {i}") for i, jwk in enumerate(jwks)]
    found = [k for k in keys if k is not None]
    if not found:
        raise JwtConfigError(f"{source}: no signature verification key in the JWKS")
    return found


def hmac_key(secret: bytes) -> _Key:
    """An explicit HMAC secret. Refuses what looks like a public key or a JWKS: reading one as a secret is the
    algorithm-confusion attack this module exists to rule out."""
    secret = secret.strip()
    if secret.startswith(b"-----BEGIN") or secret.startswith(b"{") or b"ssh-" in secret[:8]:
        raise JwtConfigError("the HMAC secret looks like a key file: give public keys with --jwt-keys")
    if len(secret) < _MIN_SECRET_BYTES:
        raise JwtConfigError(f"the HMAC secret must be at least {_MIN_SECRET_BYTES} bytes")
    return _Key(secret, _HMAC_ALGORITHMS)


def _pem_key(pem: bytes, source: str) -> _Key:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if b"PRIVATE KEY" in pem.split(b"\n", 1)[0]:
        raise JwtConfigError(f"{source}: a private key; give the issuer's public key (or certificate)")
    key: Any
    try:
        if pem.startswith(b"-----BEGIN CERTIFICATE"):
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise JwtConfigError(f"{source}: not a PEM public key or certificate ({exc})") from None
    return _Key(key, algorithms_for(key, source))


def _jwk_key(jwk: object, source: str) -> _Key | None:
    import jwt

    if not isinstance(jwk, dict):
        raise JwtConfigError(f"{source}: a JWK must be an object")
    if jwk.get("use", "sig") != "sig":
        return None  # an encryption key: not for verifying signatures
    kty = jwk.get("kty")
    if kty == "oct":
        raise JwtConfigError(f"{source}: a shared secret (kty oct) in a JWKS; give it with --jwt-secret if meant")
    if "d" in jwk:
        raise JwtConfigError(f"{source}: a private key; publish only the public part")
    alg = jwk.get("alg")
    try:
        # The key is built from its type (kty / crv); a named alg is then checked against that type.
        key = jwt.PyJWK({k: v for k, v in jwk.items() if k != "alg"}).key
    except jwt.PyJWTError as exc:
        raise JwtConfigError(f"{source}: {exc}") from None
    allowed = algorithms_for(key, source)
    if alg is not None:
        if alg not in allowed:
            raise JwtConfigError(f"{source}: alg {alg!r} does not fit a {kty} key")
        allowed = (alg,)
    kid = jwk.get("kid")
    return _Key(key, allowed, kid if isinstance(kid, str) else None)


def algorithms_for(key: Any, source: str = "key") -> tuple[str, ...]:
    """The JWS algorithms a public key may verify, by its type (and an EC key's curve)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise JwtConfigError(f"{source}: an RSA key of {key.key_size} bits; at least {_MIN_RSA_BITS} are needed")
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise JwtConfigError(f"{source}: the curve {key.curve.name} is not supported")
        return (alg,)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ("EdDSA",)
    raise JwtConfigError(f"{source}: a {type(key).__name__} cannot verify JWTs; give an RSA, EC or Ed25519 public key")


__all__ = [
    "DEFAULT_LEEWAY_S",
    "InvalidToken",
    "JwtConfigError",
    "JwtVerifier",
    "VerifiedCaller",
    "algorithms_for",
    "hmac_key",
    "load_keys",
]
