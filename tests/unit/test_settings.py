import pytest
from pydantic import PostgresDsn, ValidationError

from common.settings import DEV_SECRETS, S3Settings, ServiceSettings, settings_problems


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


def test_a_validation_error_never_shows_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typed URL that does not parse: the error names the setting, not its value (a password)."""

    class WithDsn(ServiceSettings):
        store_url: PostgresDsn = PostgresDsn("postgresql://localhost/x")

    monkeypatch.setenv("SHOP_STORE_URL", "postgresql://shop:pw-Secret@db:port/x")
    with pytest.raises(ValidationError) as raised:
        WithDsn()
    assert "pw-Secret" not in str(raised.value)
    assert settings_problems(raised.value) == ["SHOP_STORE_URL: Input should be a valid URL, invalid port number"]
