"""user_svc's settings, token keys (kid, JWKS) and password hashing: no servers needed."""

from __future__ import annotations

import base64
import json
import os

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from common.auth import generate_key_pair, key_id
from user_svc.keys import KeyFileError, jwks_json, load_private_key, token_keys
from user_svc.passwords import Passwords
from user_svc.settings import UserSettings


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SHOP_"):
            monkeypatch.delenv(name)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    settings = UserSettings()
    assert settings.port == 8080
    assert settings.database_url == "postgresql+psycopg://shop_user@127.0.0.1:5432/shop_user"
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 30 * 24 * 3600)
    assert (settings.login_pair_limit, settings.login_pair_window) == (5, 300)
    assert (settings.login_account_limit, settings.login_account_window) == (100, 3600)
    assert (settings.login_address_limit, settings.login_address_window) == (30, 60)
    assert (settings.register_address_limit, settings.register_address_window) == (10, 3600)
    assert (settings.hash_queue, settings.hash_queue_wait) == (16, 2.0)


def test_production_needs_the_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("SHOP_ENV", "production")
    with pytest.raises(ValidationError, match="SHOP_JWT_PRIVATE_KEY_FILE must be set"):
        UserSettings()
    monkeypatch.setenv("SHOP_JWT_PRIVATE_KEY_FILE", "/run/secrets/jwt.pem")
    assert UserSettings().jwt_private_key_file == "/run/secrets/jwt.pem"


def test_bootstrap_admin_needs_both_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("SHOP_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")
    with pytest.raises(ValidationError, match="SHOP_BOOTSTRAP_ADMIN_PASSWORD"):
        UserSettings()
    monkeypatch.setenv("SHOP_BOOTSTRAP_ADMIN_PASSWORD", "hunter2 but longer")
    settings = UserSettings()
    assert "hunter2" not in repr(settings)


def test_key_id_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037, appendix A.2 / A.3: an Ed25519 public key and its JWK thumbprint.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert key_id(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_signed_tokens_name_their_jwks_key(tmp_path) -> None:
    private_pem, _ = generate_key_pair()
    (tmp_path / "jwt.pem").write_bytes(private_pem)
    private = load_private_key(str(tmp_path / "jwt.pem"))
    previous = ed25519.Ed25519PrivateKey.generate().public_key()
    keys = token_keys(private, issuer="shop", audience="shop", ttl=60, previous=[previous])
    token, _ = keys.signer.sign("user-1", "customer")
    assert jwt.get_unverified_header(token)["kid"] == keys.kid
    document = json.loads(keys.jwks_json)
    assert [entry["kid"] for entry in document["keys"]] == [keys.kid, key_id(previous)]
    current = document["keys"][0]
    assert {current["kty"], current["crv"], current["alg"], current["use"]} == {"OKP", "Ed25519", "EdDSA", "sig"}
    assert "d" not in current
    assert jwt.decode(token, jwt.PyJWK(current).key, algorithms=["EdDSA"], audience="shop")["sub"] == "user-1"
    assert keys.verifier.verify(token).user_id == "user-1"
    assert json.loads(jwks_json([previous, previous]))["keys"][0]["kid"] == key_id(previous)  # no duplicates


def test_key_files_of_the_wrong_kind_are_refused(tmp_path) -> None:
    _, public_pem = generate_key_pair()
    (tmp_path / "public.pem").write_bytes(public_pem)
    with pytest.raises(KeyFileError):
        load_private_key(str(tmp_path / "public.pem"))
    with pytest.raises(KeyFileError):
        load_private_key(str(tmp_path / "missing.pem"))


async def test_passwords_are_argon2id_and_unknown_accounts_never_match() -> None:
    passwords = Passwords(time_cost=1, memory_kib=8192, parallelism=1)
    stored = await passwords.hash("correct horse 1")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse 1")
    assert not await passwords.verify(stored, "correct horse 2")
    assert not await passwords.verify(None, "correct horse 1")
    assert not await passwords.verify("not a hash", "correct horse 1")
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(time_cost=2, memory_kib=8192, parallelism=1)
    assert stronger.needs_rehash(stored)


def test_the_signing_key_must_be_in_the_key_set_which_the_jwks_serves_current_first(tmp_path) -> None:
    private_pem, _ = generate_key_pair()
    (tmp_path / "jwt.pem").write_bytes(private_pem)
    private = load_private_key(str(tmp_path / "jwt.pem"))
    _, retired_pem = generate_key_pair()
    key_set = tmp_path / "jwt_public.pem"
    key_set.write_bytes(retired_pem)
    with pytest.raises(KeyFileError, match="is not in the key set"):
        token_keys(private, issuer="shop", audience="shop", ttl=60, key_set_file=str(key_set))
    current_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_set.write_bytes(retired_pem + current_pem)  # retired first in the file
    keys = token_keys(private, issuer="shop", audience="shop", ttl=60, key_set_file=str(key_set))
    kids = [entry["kid"] for entry in json.loads(keys.jwks_json)["keys"]]
    assert kids[0] == keys.kid and len(kids) == 2
    with pytest.raises(KeyFileError, match="cannot read the token key set"):
        token_keys(private, issuer="shop", audience="shop", ttl=60, key_set_file=str(tmp_path / "missing.pem"))
