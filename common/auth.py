"""Access tokens: who is calling.

user_svc signs short-lived EdDSA (Ed25519) JWTs carrying the user id (``sub``)
and role; every service verifies them here with the public key only.  The
shared server interceptor puts the verified :class:`Principal` in a context
variable, and servicers ask for it with :func:`require_user` or
:func:`require_admin`.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.errors import PermissionDenied, Unauthenticated

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
        raise Unauthenticated("sign in first: this call needs a valid access token")
    return principal


def require_admin() -> Principal:
    principal = require_user()
    if not principal.is_admin:
        raise PermissionDenied("only an admin may do this")
    return principal


class TokenVerifier:
    """Verifies access tokens with the issuer's public key."""

    def __init__(self, public_key_pem: bytes | None, *, issuer: str, audience: str) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_file(cls, path: str | None, *, issuer: str, audience: str) -> TokenVerifier:
        pem = Path(path).read_bytes() if path else None
        return cls(pem, issuer=issuer, audience=audience)

    def verify(self, token: str) -> Principal:
        if self._key is None:
            raise Unauthenticated("this service has no token key configured")
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the access token has expired; refresh it", reason="INVALID_TOKEN") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("the access token is invalid", reason="INVALID_TOKEN") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthenticated("the access token carries no valid role", reason="INVALID_TOKEN")
        return Principal(user_id=str(claims["sub"]), role=str(role))

    def principal_from_metadata(self, metadata: Any) -> Principal | None:
        """The caller from ``authorization: Bearer …`` metadata, None when absent."""
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("authorization must be 'Bearer <access token>'")
                return self.verify(token.strip())
        return None


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
        # Key id in the token header: names the JWKS entry that verifies it.
        self.kid = kid

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
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers=headers), expires


def generate_key_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public
