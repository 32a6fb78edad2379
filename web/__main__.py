"""``python -m web``: the storefront on :8086."""

from __future__ import annotations

from common import telemetry
from common.http_server import serve_http
from common.settings import load_settings
from web.app import create_app
from web.settings import WebSettings


def main() -> None:
    settings = load_settings(WebSettings, "web")
    telemetry.setup("web", log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host)
    serve_http(create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
