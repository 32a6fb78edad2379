"""The token signing key: loading it, its key id, and the public JWKS document."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from common.auth import ALGORITHM, TokenSigner, TokenVerifier


class KeyFileError(Exception):
    """A key file that is missing, unreadable or of the wrong kind."""


def load_private_key(path: str) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the token signing key {path}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key (tokens are signed with EdDSA)")
    return key


def load_public_key(path: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the public key {path}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


def public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_jwk(key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    assert isinstance(jwk, dict)
    return dict(jwk)


def key_id(key: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): stable for a key, and
    computable by anyone holding the public key."""
    jwk = public_jwk(key)
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def jwks_json(keys: list[ed25519.Ed25519PublicKey]) -> str:
    """RFC 7517 JSON Web Key Set of the given public keys (current first)."""
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        kid = key_id(key)
        entries.setdefault(kid, {**public_jwk(key), "kid": kid, "use": "sig", "alg": ALGORITHM})
    return json.dumps({"keys": list(entries.values())}, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class TokenKeys:
    signer: TokenSigner
    verifier: TokenVerifier
    jwks_json: str
    kid: str


def token_keys(
    private_key: ed25519.Ed25519PrivateKey,
    *,
    issuer: str,
    audience: str,
    ttl: int,
    previous: list[ed25519.Ed25519PublicKey] | None = None,
) -> TokenKeys:
    public = private_key.public_key()
    kid = key_id(public)
    return TokenKeys(
        signer=TokenSigner(private_key, issuer=issuer, audience=audience, ttl=ttl, kid=kid),
        verifier=TokenVerifier(public_pem(public), issuer=issuer, audience=audience),
        jwks_json=jwks_json([public, *(previous or [])]),
        kid=kid,
    )
