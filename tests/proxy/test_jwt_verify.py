"""The JWT verifier on its own: keys pinned to their algorithms, every bad token refused with a short reason.

The proxy's HTTP front (``tests/proxy/test_jwt.py``) shows the same refusals end to end; this file covers the
key handling and the reasons without starting processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcp_guard._proxy.jwt import InvalidToken, JwtConfigError, JwtVerifier, hmac_key, load_keys
from tests.support.jwt_helpers import (
    AUDIENCE,
    ISSUER,
    claims,
    ec_key,
    ed_key,
    hs256_with_secret,
    public_jwk,
    public_pem,
    rsa_key,
    token,
    unsigned_token,
)

RSA, OTHER_RSA, EC, ED = rsa_key(), rsa_key(), ec_key(), ed_key()


def jwks_file(tmp_path: Path, *jwks: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(jwks)}))
    return path


@pytest.fixture
def verifier(tmp_path: Path) -> JwtVerifier:
    path = jwks_file(tmp_path, public_jwk(RSA, "rsa-1"), public_jwk(EC, "ec-1"), public_jwk(ED, "ed-1"))
    return JwtVerifier.from_file(path, audience=AUDIENCE, issuer=ISSUER)


def reason(verifier: JwtVerifier, text: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(text)
    return caught.value.reason


def test_valid_tokens_of_each_key_type(verifier: JwtVerifier) -> None:
    caller = verifier.verify(token(RSA, claims("alice", scope="read payments")))
    assert (caller.identity, caller.claims["scope"]) == ("alice", "read payments")
    assert verifier.verify(token(RSA, claims("ps"), alg="PS256")).identity == "ps"
    assert verifier.verify(token(EC, claims("bob"), alg="ES256", kid="ec-1")).identity == "bob"
    assert verifier.verify(token(ED, claims("carol"), alg="EdDSA", kid="ed-1")).identity == "carol"


def test_each_bad_token_has_its_reason(verifier: JwtVerifier) -> None:
    now = int(time.time())
    pem = public_pem(RSA)
    cases = {
        "expired": token(RSA, claims(exp=now - 3600)),
        "audience": token(RSA, claims(aud="https://other.test")),
        "issuer": token(RSA, claims(iss="https://evil.test")),
        "wrong key": token(OTHER_RSA, claims()),
        "alg none": unsigned_token(claims()),
        "alg None": unsigned_token(claims(), alg="None"),
        "HS256 with the public PEM": hs256_with_secret(claims(), pem),
        "HS256 with the PEM, no kid": hs256_with_secret(claims(), pem, kid=None),
        "not yet": token(RSA, claims(nbf=now + 3600)),
        "no exp": token(RSA, {k: v for k, v in claims().items() if k != "exp"}),
        "no sub": token(RSA, {k: v for k, v in claims().items() if k != "sub"}),
        "garbage": "not.a.jwt",
        "EC key, RSA alg": token(RSA, claims(), kid="ec-1"),
        "hostile alg": unsigned_token(claims(), alg='x"\r\nSet-Cookie: a=b'),
    }
    reasons = {name: reason(verifier, text) for name, text in cases.items()}
    assert reasons == {
        "expired": "the token has expired",
        "audience": "the token was not issued for this audience",
        "issuer": "the token is from another issuer",
        "wrong key": "the token's signature does not verify",
        "alg none": "unsigned tokens (alg none) are not accepted",
        "alg None": "unsigned tokens (alg none) are not accepted",
        "HS256 with the public PEM": "no configured key verifies HS256 tokens with this key id",
        "HS256 with the PEM, no kid": "no configured key verifies HS256 tokens",
        "not yet": "the token is not valid yet",
        "no exp": "the token has no exp claim",
        "no sub": "the token has no sub claim",
        "garbage": "the bearer token is not a JWT",
        # kid ec-1 names the EC key, which verifies ES256 only; the RSA key is not tried for a token naming ec-1.
        "EC key, RSA alg": "no configured key verifies RS256 tokens with this key id",
        "hostile alg": "no configured key verifies x???Set-Cookie??a?b tokens",  # safe in a quoted header value
    }


def test_the_leeway_allows_small_clock_skew_only(tmp_path: Path) -> None:
    path = jwks_file(tmp_path, public_jwk(RSA, "rsa-1"))
    now = int(time.time())
    strict = JwtVerifier.from_file(path, audience=AUDIENCE, leeway_s=0)
    lenient = JwtVerifier.from_file(path, audience=AUDIENCE)  # 30 s by default
    skewed = token(RSA, claims(exp=now - 10))
    assert lenient.verify(skewed).identity == "alice"
    assert reason(strict, skewed) == "the token has expired"
    assert reason(lenient, token(RSA, claims(exp=now - 120))) == "the token has expired"


def test_a_pem_public_key_and_a_named_identity_claim(tmp_path: Path) -> None:
    path = tmp_path / "issuer.pem"
    path.write_bytes(public_pem(RSA))
    verifier = JwtVerifier.from_file(path, audience=AUDIENCE, identity_claim="email")
    assert verifier.algorithms == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    caller = verifier.verify(token(RSA, claims(email="alice@acme.test"), kid=None))
    assert caller.identity == "alice@acme.test"
    # A kid the PEM cannot match is still tried against it (a PEM key has no id); the HS/RS confusion is not.
    assert verifier.verify(token(RSA, claims(email="a@b"), kid="whatever")).identity == "a@b"
    assert reason(verifier, hs256_with_secret(claims(), public_pem(RSA), kid=None)).startswith("no configured key")
    assert reason(verifier, token(RSA, claims())) == "the token has no email claim"


def test_a_jwk_that_names_its_alg_verifies_only_that(tmp_path: Path) -> None:
    path = jwks_file(tmp_path, public_jwk(RSA, "rsa-1", alg="PS256"))
    verifier = JwtVerifier.from_file(path, audience=AUDIENCE)
    assert verifier.verify(token(RSA, claims(), alg="PS256")).identity == "alice"
    assert reason(verifier, token(RSA, claims(), alg="RS256")).startswith("no configured key verifies RS256")


def test_an_hmac_secret_only_when_given_as_one() -> None:
    secret = b"s" * 32
    verifier = JwtVerifier.from_secret(secret, audience=AUDIENCE)
    assert verifier.verify(token(secret, claims(), alg="HS256", kid=None)).identity == "alice"
    assert reason(verifier, token(RSA, claims())).startswith("no configured key verifies RS256")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (public_pem(RSA), "looks like a key file"),
        (json.dumps({"keys": []}).encode(), "looks like a key file"),
        (b"short", "at least 32 bytes"),
    ],
)
def test_an_hmac_secret_that_is_a_public_key_is_refused(content: bytes, message: str) -> None:
    with pytest.raises(JwtConfigError, match=message):
        hmac_key(content)


def private_pem() -> bytes:
    return RSA.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).encode(), "shared secret"),
        (json.dumps({"keys": [{**public_jwk(RSA, "r"), "d": "x"}]}).encode(), "private key"),
        (json.dumps({"keys": [{**public_jwk(RSA, "r"), "alg": "HS256"}]}).encode(), "does not fit"),
        (json.dumps({"keys": [{**public_jwk(EC, "e"), "alg": "ES384"}]}).encode(), "does not fit"),
        (json.dumps({"keys": [{**public_jwk(RSA, "r"), "use": "enc"}]}).encode(), "no signature verification key"),
        (json.dumps({"nokeys": 1}).encode(), '"keys" list'),
        (b"hello", "neither a JWKS"),
        (private_pem(), "a private key"),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "at least 2048",
        ),
    ],
)
def test_unusable_key_files_are_refused_at_start(content: bytes, message: str) -> None:
    with pytest.raises(JwtConfigError, match=message):
        load_keys(content)


def test_an_audience_is_required(tmp_path: Path) -> None:
    path = jwks_file(tmp_path, public_jwk(RSA, "rsa-1"))
    with pytest.raises(JwtConfigError, match="audience is required"):
        JwtVerifier.from_file(path, audience="")
