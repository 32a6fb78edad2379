"""Access tokens: who is calling.

user_svc signs short-lived EdDSA (Ed25519) JWTs carrying the user id (``sub``)
and role, their header naming the signing key (``kid``); every service verifies
them here with the public keys only, picking the key by ``kid`` from the key set.  The
shared server interceptor puts the verified :class:`Principal` in a context
variable, and servicers ask for it with :func:`require_user` or
:func:`require_admin`.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.errors import PermissionDeniedError, UnauthenticatedError

log = logging.getLogger("shop.auth")

ALGORITHM = "EdDSA"
ROLES = ("customer", "admin")


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("current_principal", default=None)


def require_user() -> Principal:
    principal = current_principal.get()
    if principal is None:
        raise UnauthenticatedError("sign in first: this call needs a valid access token")
    return principal


def require_admin() -> Principal:
    principal = require_user()
    if not principal.is_admin:
        raise PermissionDeniedError("only an admin may do this")
    return principal


class TokenVerifier:
    """Verifies access tokens with the issuer's public keys: a key set, each key
    named by its RFC 7638 thumbprint (its ``kid``), so a token is checked
    against the key its header names and a rotation keeps the previous key's
    tokens valid while that key is still in the set.

    Built from a file (``SHOP_JWT_PUBLIC_KEY_FILE``: one or more PEM public keys,
    the current one and retired ones not yet expired), it follows the file: a
    changed file is read again before the next token is checked, so adding or
    retiring a key needs no restart.  A file that cannot be read then keeps the
    keys it had.
    """

    def __init__(self, public_key_pem: bytes | None, *, issuer: str, audience: str, path: str | None = None) -> None:
        self._keys: dict[str, ed25519.Ed25519PublicKey] = parse_key_set(public_key_pem) if public_key_pem else {}
        self._issuer = issuer
        self._audience = audience
        self._path = path
        self._seen: tuple[int, int, int] | None = None

    @classmethod
    def from_file(cls, path: str | None, *, issuer: str, audience: str) -> TokenVerifier:
        if path is None:
            return cls(None, issuer=issuer, audience=audience)
        seen = _file_signature(path)  # before the read: a change in between is read again on the next call
        verifier = cls(Path(path).read_bytes(), issuer=issuer, audience=audience, path=path)
        verifier._seen = seen
        return verifier

    def key_set(self) -> dict[str, ed25519.Ed25519PublicKey]:
        """The key set now, by kid."""
        self._follow_file()
        return dict(self._keys)

    def _follow_file(self) -> None:
        if self._path is None:
            return
        seen = _file_signature(self._path)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self._keys = parse_key_set(Path(self._path).read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("cannot read the token key set %s again; keeping the %d keys it had: %s",
                        self._path, len(self._keys), exc)  # fmt: skip
            return
        log.info("token key set read again", extra={"kids": ",".join(self._keys)})

    def verify(self, token: str) -> Principal:
        self._follow_file()
        if not self._keys:
            raise UnauthenticatedError("this service has no token key configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError("the access token is invalid", reason="INVALID_TOKEN") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError(
                "the access token is invalid: it names no signing key (kid); sign in again", reason="INVALID_TOKEN"
            )
        key = self._keys.get(kid)
        if key is None:
            shown = kid if _KID.fullmatch(kid) else "?"
            raise UnauthenticatedError(
                f"the access token is invalid: it was signed with a key this service does not know (kid {shown}); "
                "sign in again",
                reason="INVALID_TOKEN",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError("the access token has expired; refresh it", reason="INVALID_TOKEN") from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError("the access token is invalid", reason="INVALID_TOKEN") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise UnauthenticatedError("the access token carries no valid role", reason="INVALID_TOKEN")
        return Principal(user_id=str(claims["sub"]), role=str(role))

    def principal_from_metadata(self, metadata: Any) -> Principal | None:
        """The caller from ``authorization: Bearer …`` metadata, None when absent."""
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise UnauthenticatedError("authorization must be 'Bearer <access token>'")
                return self.verify(token.strip())
        return None


_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PEM_PUBLIC_KEY = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def parse_key_set(pem: bytes) -> dict[str, ed25519.Ed25519PublicKey]:
    """Every Ed25519 public key of a PEM file (one or more ``PUBLIC KEY`` blocks), by kid,
    in file order; ValueError when there is none or one is not an Ed25519 key."""
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    for block in _PEM_PUBLIC_KEY.findall(pem):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("a key of the token key set is not an Ed25519 public key (tokens are signed with EdDSA)")
        keys.setdefault(key_id(key), key)
    if not keys:
        raise ValueError("the token key set holds no PEM public key")
    return keys


def key_id(key: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key: stable
    for a key, and computable by anyone holding it."""
    x = base64.urlsafe_b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x.decode().rstrip("=")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")


class TokenSigner:
    """Signs access tokens; only user_svc holds one."""

    def __init__(
        self,
        private_key: ed25519.Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        kid: str | None = None,
    ) -> None:
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl
        # Key id in the token header: names the key of the set (and the JWKS entry) that verifies it.
        self.kid = kid or key_id(private_key.public_key())

    def sign(self, user_id: str, role: str, *, now: float | None = None) -> tuple[str, int]:
        """The token and its expiry (unix seconds)."""
        issued = int(now if now is not None else time.time())
        expires = issued + self.ttl
        claims = {
            "sub": user_id,
            "role": role,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid}), expires


def generate_key_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public
