import pytest
from pydantic import ValidationError

from common.settings import DEV_SECRETS, S3Settings, ServiceSettings


class ProductLike(ServiceSettings, S3Settings):
    pass


def test_development_fills_local_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PORT", "9999")
    settings = ProductLike()
    assert settings.port == 9999
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() == DEV_SECRETS["s3_secret_key"]


def test_production_refuses_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ENV", "production")
    with pytest.raises(ValidationError, match="SHOP_S3_SECRET_KEY must be set"):
        ProductLike()
    monkeypatch.setenv("SHOP_S3_SECRET_KEY", "real")
    settings = ProductLike()
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() == "real"
