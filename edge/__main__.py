"""``python -m edge``: the REST edge on :8085."""

from __future__ import annotations

from common import telemetry
from common.http_server import serve_http
from common.settings import load_settings
from edge.app import create_app
from edge.settings import EdgeSettings


def main() -> None:
    settings = load_settings(EdgeSettings, "edge")
    telemetry.setup("edge", log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host)
    serve_http(create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
