import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from common.auth import TokenSigner, TokenVerifier, generate_key_pair
from common.errors import Unauthenticated


def _pair(ttl: int = 60) -> tuple[TokenSigner, TokenVerifier]:
    private, public = generate_key_pair()
    key = serialization.load_pem_private_key(private, None)
    signer = TokenSigner(key, issuer="shop", audience="shop", ttl=ttl)  # type: ignore[arg-type]
    return signer, TokenVerifier(public, issuer="shop", audience="shop")


def test_signed_token_verifies_with_public_key_only() -> None:
    signer, verifier = _pair()
    token, expires = signer.sign("user-1", "admin")
    principal = verifier.verify(token)
    assert (principal.user_id, principal.role, principal.is_admin) == ("user-1", "admin", True)
    assert expires > time.time()


def test_expired_token() -> None:
    signer, verifier = _pair(ttl=10)
    token, _ = signer.sign("user-1", "customer", now=time.time() - 3600)
    with pytest.raises(Unauthenticated, match="expired") as raised:
        verifier.verify(token)
    assert raised.value.reason == "INVALID_TOKEN"


def test_tampered_and_foreign_tokens() -> None:
    signer, verifier = _pair()
    token, _ = signer.sign("user-1", "customer")
    header, _payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"user-1","role":"admin"}').decode()
    with pytest.raises(Unauthenticated, match="invalid"):
        verifier.verify(f"{header}.{forged_payload}.{signature}")
    other_signer, _ = _pair()
    foreign, _ = other_signer.sign("user-1", "customer")
    with pytest.raises(Unauthenticated, match="invalid"):
        verifier.verify(foreign)


def test_bearer_metadata() -> None:
    signer, verifier = _pair()
    token, _ = signer.sign("user-2", "customer")
    principal = verifier.principal_from_metadata([("authorization", f"Bearer {token}")])
    assert principal is not None
    assert principal.user_id == "user-2"
    assert verifier.principal_from_metadata([("x-request-id", "r")]) is None
    with pytest.raises(Unauthenticated, match="Bearer"):
        verifier.principal_from_metadata([("authorization", f"Basic {token}")])
