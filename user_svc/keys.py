"""The token signing key: loading it, the key set it belongs to, and the public
JWKS document (the key set, current key first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from common.auth import ALGORITHM, TokenSigner, TokenVerifier, key_id


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


def public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_jwk(key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    assert isinstance(jwk, dict)
    return dict(jwk)


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
    verifier: TokenVerifier  # the key set: the current key and the retired ones still trusted
    kid: str

    @property
    def jwks_json(self) -> str:
        """The key set as a JWKS, the current key first."""
        keys = self.verifier.key_set()
        current = keys.pop(self.kid, None)
        return jwks_json([*([current] if current else []), *keys.values()])


def token_keys(
    private_key: ed25519.Ed25519PrivateKey,
    *,
    issuer: str,
    audience: str,
    ttl: int,
    key_set_file: str | None = None,
    previous: list[ed25519.Ed25519PublicKey] | None = None,
) -> TokenKeys:
    """The signer of the current key and the verifier of the key set: the file
    ``key_set_file`` (which must hold the current key: every service verifies
    with it), or else the current key and ``previous``."""
    public = private_key.public_key()
    kid = key_id(public)
    if key_set_file:
        try:
            verifier = TokenVerifier.from_file(key_set_file, issuer=issuer, audience=audience)
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read the token key set {key_set_file}: {exc}") from exc
        if kid not in verifier.key_set():
            raise KeyFileError(
                f"the public key of the signing key (kid {kid}) is not in the key set {key_set_file}: every other "
                "service would reject the tokens signed here; add it to the set (and let it reach every service) first"
            )
    else:
        pems = b"".join(public_pem(key) for key in [public, *(previous or [])])
        verifier = TokenVerifier(pems, issuer=issuer, audience=audience)
    return TokenKeys(
        signer=TokenSigner(private_key, issuer=issuer, audience=audience, ttl=ttl, kid=kid),
        verifier=verifier,
        kid=kid,
    )
