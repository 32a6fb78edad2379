import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from common.auth import TokenSigner, TokenVerifier, generate_key_pair
from common.errors import UnauthenticatedError


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
    with pytest.raises(UnauthenticatedError, match="expired") as raised:
        verifier.verify(token)
    assert raised.value.reason == "INVALID_TOKEN"


def test_tampered_and_foreign_tokens() -> None:
    signer, verifier = _pair()
    token, _ = signer.sign("user-1", "customer")
    header, _payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"user-1","role":"admin"}').decode()
    with pytest.raises(UnauthenticatedError, match="invalid"):
        verifier.verify(f"{header}.{forged_payload}.{signature}")
    other_signer, _ = _pair()
    foreign, _ = other_signer.sign("user-1", "customer")
    with pytest.raises(UnauthenticatedError, match="invalid"):
        verifier.verify(foreign)


def test_bearer_metadata() -> None:
    signer, verifier = _pair()
    token, _ = signer.sign("user-2", "customer")
    principal = verifier.principal_from_metadata([("authorization", f"Bearer {token}")])
    assert principal is not None
    assert principal.user_id == "user-2"
    assert verifier.principal_from_metadata([("x-request-id", "r")]) is None
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        verifier.principal_from_metadata([("authorization", f"Basic {token}")])


def test_the_key_is_chosen_by_kid_from_the_key_set_and_the_set_follows_its_file(tmp_path) -> None:
    old_signer, old_verifier = _pair()
    new_signer, new_verifier = _pair()
    old_pem = old_verifier.key_set()[old_signer.kid].public_bytes(*_PUBLIC)
    new_pem = new_verifier.key_set()[new_signer.kid].public_bytes(*_PUBLIC)
    key_set = tmp_path / "jwt_public.pem"
    key_set.write_bytes(old_pem)
    verifier = TokenVerifier.from_file(str(key_set), issuer="shop", audience="shop")
    old_token, _ = old_signer.sign("user-1", "customer")
    new_token, _ = new_signer.sign("user-2", "customer")
    assert jwt.get_unverified_header(new_token)["kid"] == new_signer.kid != old_signer.kid
    assert verifier.verify(old_token).user_id == "user-1"
    with pytest.raises(UnauthenticatedError, match=f"does not know \\(kid {new_signer.kid}\\)"):
        verifier.verify(new_token)

    _replace(key_set, old_pem + new_pem)  # the new key joins the set: both verify, no new verifier
    assert verifier.verify(old_token).user_id == "user-1"
    assert verifier.verify(new_token).user_id == "user-2"
    assert list(verifier.key_set()) == [old_signer.kid, new_signer.kid]

    _replace(key_set, new_pem)  # the old key retired
    assert verifier.verify(new_token).user_id == "user-2"
    with pytest.raises(UnauthenticatedError, match="a key this service does not know") as retired:
        verifier.verify(old_token)
    assert retired.value.reason == "INVALID_TOKEN"

    _replace(key_set, b"not a key")  # a broken file keeps the keys the verifier had
    assert verifier.verify(new_token).user_id == "user-2"


def test_a_token_without_a_kid_or_with_a_strange_one_is_refused() -> None:
    signer, verifier = _pair()
    claims = {"sub": "user-1", "role": "customer", "iss": "shop", "aud": "shop", "iat": int(time.time()),
              "exp": int(time.time()) + 60}  # fmt: skip
    bare = jwt.encode(claims, signer._key, algorithm="EdDSA")
    with pytest.raises(UnauthenticatedError, match="names no signing key"):
        verifier.verify(bare)
    odd = jwt.encode(claims, signer._key, algorithm="EdDSA", headers={"kid": "<script>\n"})
    with pytest.raises(UnauthenticatedError, match=r"\(kid \?\)"):
        verifier.verify(odd)


_PUBLIC = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _replace(path, content: bytes) -> None:
    """Write a file the way an operator's tool or a Kubernetes volume does: a new file renamed into place."""
    staged = path.with_suffix(".new")
    staged.write_bytes(content)
    staged.replace(path)
